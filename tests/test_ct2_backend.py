"""The CTranslate2 backend as the RL rollout engine: rollouts that follow the current weights, LoRA syncs, group
samples; choosing it; cutting generate calls.  The contract it shares with OpenVINO: tests/test_cpu_engines.py."""

import pytest

pytest.importorskip("ctranslate2")

from tagpr.generation import SamplingParams, make_backend  # noqa: E402
from tagpr.generation.ct2 import CTranslate2Backend  # noqa: E402

from fakes import engine_behind_one_step  # noqa: E402
from test_cpu_engines import PROMPTS  # noqa: E402


def test_auto_is_a_cpu_engine_and_unknown_names_fail(monkeypatch):
    from tagpr.generation import openvino, resolve_backend

    monkeypatch.setattr(openvino, "available", lambda: False)  # without OpenVINO GenAI, auto is CTranslate2
    assert resolve_backend("auto") == "ct2" and resolve_backend("hf") == "transformers"
    with pytest.raises(ValueError, match="unknown backend 'vllm2'"):
        make_backend("vllm2")


def test_rollouts_follow_the_current_weights(embedded_backend):
    """Generate, train one step, generate again: the engine's greedy output changes exactly as transformers'
    does on the same updated weights, and its token log-probs are the policy's."""
    import torch

    policy, tok, engine, hf, p, before = engine_behind_one_step(CTranslate2Backend, embedded_backend, PROMPTS[:2])
    engine.load_weights(policy)
    after = engine.generate(PROMPTS[:2], p)
    want = hf.generate(PROMPTS[:2], p)
    assert after[0][0].text != before and [g[0].text for g in after] == [g[0].text for g in want]
    prompt_ids = [tok.encode(hf.render(PROMPTS[1]), add_special_tokens=False)]
    (toks, lps, _), = engine.sample_ids(prompt_ids, p, logprobs=True)[0]
    with torch.no_grad():
        logits = policy(input_ids=torch.tensor([prompt_ids[0] + toks])).logits[0].float()
    ref = torch.log_softmax(logits, -1)
    n = len(prompt_ids[0])
    assert max(abs(lp - float(ref[n - 1 + j, t])) for j, (t, lp) in enumerate(zip(toks, lps))) < 1e-3


def test_engine_syncs_a_lora_policy_merged_and_leaves_it_unmerged(embedded_backend):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tagpr.training.common import lora_config

    src = embedded_backend.model
    base = AutoModelForCausalLM.from_config(src.config)
    base.load_state_dict(src.state_dict())
    lora = get_peft_model(base, lora_config(4, 8, 0.0))
    with torch.no_grad():
        for n, prm in lora.named_parameters():
            if "lora_B" in n:
                prm.normal_(0, 0.05)  # an adapter that changes the output
    tok = embedded_backend.tokenizer
    engine = CTranslate2Backend(tokenizer_obj=tok, model_obj=lora)
    from tagpr.generation.hf import TransformersBackend

    p = SamplingParams(max_new_tokens=10)
    want = TransformersBackend(model_obj=lora, tokenizer_obj=tok).generate(PROMPTS[:1], p)[0][0].text
    assert engine.generate(PROMPTS[:1], p)[0][0].text == want
    assert not any(getattr(m, "merged", False) for m in lora.modules())  # unmerged after the copy


def test_group_samples_share_one_prompt_forward_and_keep_their_own_logprobs(embedded_backend):
    """n sampled continuations of a prompt decode from one forward of it (a GRPO group pays for its prompt
    once); every sample's tokens and log-probs stay together: they are the policy's log-probs of that sample."""
    import torch

    tok = embedded_backend.tokenizer
    engine = CTranslate2Backend(tokenizer_obj=tok, batch_size=8)
    prompt_ids = [tok.encode(embedded_backend.render(q), add_special_tokens=False) for q in PROMPTS[:3]]
    out = engine.sample_ids(prompt_ids, SamplingParams(max_new_tokens=10, temperature=1.0, n=4, seed=3), logprobs=True)
    assert [len(g) for g in out] == [4, 4, 4]  # 3 prompts x 4 samples; batch 8 = 2 prompts a call
    model = embedded_backend.model
    for pids, group in zip(prompt_ids, out):
        assert len({tuple(t) for t, _, _ in group}) > 1  # sampled, not one text four times
        for toks, lps, finish in group:
            assert len(toks) == len(lps) and finish in ("eos", "length")
            with torch.no_grad():
                ref = torch.log_softmax(model(input_ids=torch.tensor([pids + toks])).logits[0].float(), -1)
            n = len(pids)
            assert max(abs(lp - float(ref[n - 1 + j, t])) for j, (t, lp) in enumerate(zip(toks, lps))) < 1e-3


def test_calls_bound_the_tokens_in_flight_and_keep_similar_lengths_together():
    from tagpr.generation.ct2 import _calls

    lengths = [500, 100, 480, 90, 470, 300, 95]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    calls = _calls(order, lengths, per_call=64, hyp=1, max_new=100, budget=1500)
    assert [i for c in calls for i in c] == order  # every row once, longest first
    for c in calls:  # within the budget, counted at the call's longest prompt (a lone row may exceed it)
        assert len(c) == 1 or len(c) * (lengths[c[0]] + 100) <= 1500
    assert calls[0] == [0, 2] and [1, 6, 3] in calls  # 2 x 600 fits, 3 x 600 does not; the short rows share one
    assert _calls(order, lengths, per_call=64, hyp=4, max_new=100, budget=1500) == [[i] for i in order[:4]] + [[1], [6], [3]]
    assert _calls(order, lengths, per_call=2, hyp=1, max_new=10, budget=10**6, spread=10**6) == \
        [order[0:2], order[2:4], order[4:6], order[6:]]
    # a call's prompts lie within `spread` tokens of its longest: 470 and 300 do not share one, 100 and 90 do
    assert _calls(order, lengths, per_call=64, hyp=1, max_new=10, budget=10**6, spread=48) == [[0, 2, 4], [5], [1, 6, 3]]
    assert _calls(order, lengths, per_call=64, hyp=1, max_new=10, budget=10**6, spread=15) == [[0], [2, 4], [5], [1, 6, 3]]
