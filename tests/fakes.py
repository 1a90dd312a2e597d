"""Test doubles shared by several test modules."""

from tagpr.generation import Generation


class FixedBackend:
    """A generation backend answering each prompt with a fixed text, chosen by the example input the prompt (a
    string or a message list) ends with; every generation reports the given token counts."""

    name = "fixed"
    tokenizer = None

    def __init__(self, by_input, prompt_tokens=8, completion_tokens=2):
        self.by_input, self.prompt_tokens, self.completion_tokens = by_input, prompt_tokens, completion_tokens

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            text = p[-1]["content"] if isinstance(p, list) else p
            answer = next(a for inp, a in self.by_input.items() if text.endswith(inp))
            out.append([Generation(answer, self.prompt_tokens, self.completion_tokens)])
        return out
