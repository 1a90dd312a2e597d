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


def policy_copy(hf_backend):
    """A trainable copy of the transformers backend's model (an RL policy to sync into an engine)."""
    from transformers import AutoModelForCausalLM

    src = hf_backend.model
    policy = AutoModelForCausalLM.from_config(src.config)
    policy.load_state_dict(src.state_dict())
    return policy


def teach_one_step(policy, tok, text):
    """One SGD step (lr 0.5) on ``text``: the policy then writes a phrase it would not have written."""
    import torch

    policy.train()
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    ids = tok(text, return_tensors="pt")["input_ids"]
    policy(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    policy.eval()
