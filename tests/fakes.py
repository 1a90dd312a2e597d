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


def engine_behind_one_step(engine_cls, hf_backend, prompts):
    """An engine made from a trainable copy of ``hf_backend``'s model, beside transformers on the same policy:
    their greedy texts of ``prompts`` agree, then the policy takes one training step the engine has not synced
    (its text is still the old one).  Returns (policy, tokenizer, engine, transformers backend, params, the
    first prompt's text before the step)."""
    from tagpr.generation import SamplingParams
    from tagpr.generation.hf import TransformersBackend

    policy, tok = policy_copy(hf_backend), hf_backend.tokenizer
    engine = engine_cls(tokenizer_obj=tok, model_obj=policy)
    hf = TransformersBackend(model_obj=policy, tokenizer_obj=tok)
    p = SamplingParams(max_new_tokens=12)
    before = engine.generate(prompts, p)[0][0].text
    assert before == hf.generate(prompts, p)[0][0].text

    teach_one_step(policy, tok, hf.render(prompts[0]) + "Zebra zebra zebra zebra.")

    assert engine.generate(prompts, p)[0][0].text == before  # not synced yet: the old weights
    return policy, tok, engine, hf, p, before
