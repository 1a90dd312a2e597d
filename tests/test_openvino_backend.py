"""The OpenVINO GenAI backend's own parts: choosing it, exporting a local checkpoint (matching transformers),
the export's check and its cache.  The contract it shares with CTranslate2: tests/test_cpu_engines.py."""

import pytest

pytest.importorskip("openvino_genai")

from tagpr.generation import SamplingParams, make_backend  # noqa: E402
from tagpr.generation.openvino import OpenVINOBackend  # noqa: E402

from fakes import engine_behind_one_step  # noqa: E402
from test_cpu_engines import PROMPTS  # noqa: E402


def test_auto_is_openvino_on_the_cpu_and_unknown_names_fail():
    from tagpr.generation import resolve_backend

    assert resolve_backend("auto") == "openvino" and resolve_backend("ov") == "openvino"
    assert resolve_backend("hf") == "transformers"
    with pytest.raises(ValueError, match="unknown backend 'vllm2'"):
        make_backend("vllm2")


def test_a_local_checkpoint_is_exported_and_matches_transformers(tiny_model, monkeypatch):
    """A local directory (here a random 2-layer Llama with grouped KV heads) is exported per use; greedy text,
    token counts and option scores equal transformers' on it."""
    from tagpr.generation.hf import TransformersBackend

    p = SamplingParams(max_new_tokens=20)
    ours, hf = OpenVINOBackend(str(tiny_model)), TransformersBackend(str(tiny_model))
    a, b = ours.generate(PROMPTS, p), hf.generate(PROMPTS, p)
    assert [r[0].text for r in a] == [r[0].text for r in b]
    assert [r[0].completion_tokens for r in a] == [r[0].completion_tokens for r in b]
    assert ours.option_logprobs([("Rate it.", "")], ["1", "5"])[0] == pytest.approx(
        hf.option_logprobs([("Rate it.", "")], ["1", "5"])[0], abs=1e-3)
    # the prompt is forwarded once and its state gathered into one row per option; options of several tokens,
    # in forwards of 2 (each after its own prefill), score as transformers' full forwards do
    from tagpr.generation import openvino

    options = ["dark comedy", "5", "a much longer option of several tokens", "x"]
    monkeypatch.setattr(openvino, "OPTIONS_PER_FORWARD", 2)
    req = [("Pick a colour.", "My answer: "), ("Rate it 1-5.", "")]
    for a, b in zip(ours.option_logprobs(req, options), hf.option_logprobs(req, options)):
        assert a == pytest.approx(b, abs=1e-3)
    path = ours.path
    ours.close()
    import os

    assert not os.path.exists(path)  # the per-use export is gone with the backend


def test_the_embedded_export_is_cached_once(monkeypatch, embedded_backend):
    from tagpr.embedded import resolve_lm
    from tagpr.generation import openvino

    first = openvino.convert(resolve_lm(None))
    monkeypatch.setattr(openvino, "export", lambda *a, **k: pytest.fail("exported again"))
    assert openvino.convert(resolve_lm(None)) == first and (first / openvino.DONE).is_file()


def test_an_export_whose_logits_differ_is_refused(monkeypatch, tiny_model, tmp_path):
    from tagpr.generation import openvino

    monkeypatch.setattr(openvino, "EXPORT_TOLERANCE", -1.0)  # no export can pass
    with pytest.raises(ValueError, match="logits differ.*--backend ct2"):
        openvino.export(str(tiny_model), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_rollouts_follow_the_current_weights(embedded_backend, monkeypatch):
    """The RL engine: generate, train one step, generate again; the synced engine's greedy output changes
    exactly as transformers' does on the updated weights (the traced model shares the policy's memory, so a
    sync does not trace again), and samples come with NaN log-probs (unknown)."""
    import math

    from tagpr.generation import openvino

    policy, tok, engine, hf, p, before = engine_behind_one_step(OpenVINOBackend, embedded_backend, PROMPTS[:2])
    traced = []
    real_build = openvino.build_model
    monkeypatch.setattr(openvino, "build_model", lambda *a, **k: traced.append(1) or real_build(*a, **k))
    engine.load_weights(policy, seed=3)
    assert traced == [] and engine.weight_syncs == 2
    norm = policy.model.norm.weight
    norm.data = norm.data.clone()  # new storage (as a LoRA variant's unmerge gives): the next sync traces again
    engine.load_weights(policy, seed=3)
    assert traced == [1]
    after = engine.generate(PROMPTS[:2], p)
    assert after[0][0].text != before and [g[0].text for g in after] == [g[0].text for g in hf.generate(PROMPTS[:2], p)]

    prompt_ids = [tok.encode(hf.render(q), add_special_tokens=False) for q in PROMPTS[:2]]
    sp = SamplingParams(max_new_tokens=10, temperature=1.0, n=3, seed=None)
    got = engine.sample_ids(prompt_ids, sp, logprobs=True)
    assert [len(g) for g in got] == [3, 3]
    for ids_, lps, finish in got[0]:
        assert len(lps) == len(ids_) and all(math.isnan(x) for x in lps) and finish in ("eos", "length")
    again = engine.sample_ids(prompt_ids, sp)  # the seed stream goes on: new samples
    assert again != [[(i, [], f) for i, _, f in g] for g in got]
    engine.load_weights(policy, seed=3)  # the same weights and seed: the same samples again
    assert engine.sample_ids(prompt_ids, sp) == [[(i, [], f) for i, _, f in g] for g in got]
    # the same prompt twice in a call: each prompt draws from its own seed
    twice = engine.sample_ids([prompt_ids[0]] * 2, sp)
    assert [s[0] for s in twice[0]] != [s[0] for s in twice[1]]


def test_auto_falls_back_to_ct2_when_the_export_is_refused(monkeypatch):
    from tagpr.generation import openvino

    def refuse(*a, **k):
        raise openvino.ExportError("m: cannot export this model to OpenVINO (x); use --backend ct2")

    monkeypatch.setattr(openvino, "OpenVINOBackend", refuse)
    assert make_backend("auto").name == "ct2"  # auto: CTranslate2 instead
    with pytest.raises(openvino.ExportError, match="use --backend ct2"):
        make_backend("openvino")  # asked for by name: the error
