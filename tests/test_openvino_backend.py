"""The OpenVINO GenAI backend's own parts: choosing it, exporting a local checkpoint (matching transformers),
the export's check and its cache.  The contract it shares with CTranslate2: tests/test_cpu_engines.py."""

import pytest

pytest.importorskip("openvino_genai")

from tagpr.generation import SamplingParams, make_backend  # noqa: E402
from tagpr.generation.openvino import OpenVINOBackend  # noqa: E402

from test_cpu_engines import PROMPTS  # noqa: E402


def test_auto_is_openvino_on_the_cpu_and_unknown_names_fail():
    from tagpr.generation import resolve_backend

    assert resolve_backend("auto") == "openvino" and resolve_backend("ov") == "openvino"
    assert resolve_backend("hf") == "transformers"
    with pytest.raises(ValueError, match="unknown backend 'vllm2'"):
        make_backend("vllm2")


def test_a_local_checkpoint_is_exported_and_matches_transformers(tiny_model):
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
