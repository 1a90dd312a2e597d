"""The transformers backend on the embedded model: stop strings, resumed turns, KV-cache reuse, option scores."""

import math

import pytest

from tagpr.generation import SamplingParams
from tagpr.generation.hf import TransformersBackend


@pytest.fixture(scope="module")
def reusing(embedded_backend):
    b = embedded_backend
    return TransformersBackend(model_obj=b.model, tokenizer_obj=b.tokenizer, batch_size=1, reuse_cache=True)


def test_stop_string_ends_the_sequence_and_is_reported(embedded_backend):
    out = embedded_backend.generate(["Write a long sentence about the sea."] * 2, SamplingParams(max_new_tokens=32, stop=(" ",)))
    for row in out:
        g = row[0]
        assert " " not in g.text and g.stop_reason == " " and g.finish_reason == "stop"
        assert g.completion_tokens < 32  # it stopped early, not at the token limit


def test_kv_cache_reuse_gives_the_same_greedy_text(embedded_backend, reusing):
    prompt = "Describe a cat in two short sections."
    p1, p2 = SamplingParams(max_new_tokens=12), SamplingParams(max_new_tokens=12)
    first = reusing.continue_generation([(prompt, "### 1. Looks\n")], p1)[0][0].text
    partial = "### 1. Looks\n" + first + "\n### 2. Habits\n"
    resumed = reusing.continue_generation([(prompt, partial)], p2)[0][0].text
    assert reusing.prefix_cache.hits >= 1 and reusing.prefix_cache.reused_tokens > 20
    fresh = embedded_backend.continue_generation([(prompt, partial)], p2)[0][0].text
    assert resumed == fresh


def test_option_logprobs_match_a_full_forward(embedded_backend):
    import torch

    b = embedded_backend
    prompt, partial, options = "Pick a colour.", "My answer: ", ["blue", "dark comedy", "5"]
    scores = b.option_logprobs([(prompt, partial)], options)[0]
    assert len(scores) == 3 and all(s < 0 and math.isfinite(s) for s in scores)
    prefix = b.tokenizer.encode(b.render(prompt) + partial, add_special_tokens=False)
    for opt, got in zip(options, scores):
        ids = b.tokenizer.encode(opt, add_special_tokens=False)
        with torch.inference_mode():
            logits = b.model(input_ids=torch.tensor([prefix + ids])).logits[0].float()
        lps = torch.log_softmax(logits, -1)
        want = sum(float(lps[len(prefix) - 1 + j, t]) for j, t in enumerate(ids))
        assert got == pytest.approx(want, abs=1e-3)
