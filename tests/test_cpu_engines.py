"""The CPU engines' shared contract, on the embedded model, for OpenVINO GenAI and CTranslate2 alike: greedy text
and token counts equal transformers', stop strings end a sequence and are reported, ``n`` seeded samples,
resumed turns, option scores, and one clear error for a bad model path or setting."""

import math

import pytest

from tagpr.generation import SamplingParams

PROMPTS = ["Write a long sentence about the sea.", "Name three fruits.", "Paraphrase: the cat sat on the mat.",
           "What is the capital of France?"]
ENGINES = ["openvino", "ct2"]


def engine_class(name):
    if name == "openvino":
        pytest.importorskip("openvino_genai")
        from tagpr.generation.openvino import OpenVINOBackend

        return OpenVINOBackend
    pytest.importorskip("ctranslate2")
    from tagpr.generation.ct2 import CTranslate2Backend

    return CTranslate2Backend


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, embedded_backend):
    return engine_class(request.param)(tokenizer_obj=embedded_backend.tokenizer, batch_size=3)


@pytest.mark.parametrize("max_new", [40, 6])  # every answer ends on its own at 40; every one is cut at 6
def test_greedy_text_matches_transformers(embedded_backend, engine, max_new):
    p = SamplingParams(max_new_tokens=max_new)
    hf = [g[0] for g in embedded_backend.generate(PROMPTS, p)]
    ours = [g[0] for g in engine.generate(PROMPTS, p)]  # batch of 3: two calls, prompts of several lengths
    assert [g.text for g in ours] == [g.text for g in hf]
    assert [g.completion_tokens for g in ours] == [g.completion_tokens for g in hf]
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in hf]
    assert [g.prompt_tokens for g in ours] == [g.prompt_tokens for g in hf]
    assert {g.finish_reason for g in ours} == {"stop" if max_new == 40 else "length"}


def test_stop_string_ends_the_sequence_and_is_reported(engine):
    out = engine.generate(["Write a long sentence about the sea."] * 2, SamplingParams(max_new_tokens=32, stop=(" ",)))
    for row in out:
        g = row[0]
        assert " " not in g.text and g.stop_reason == " " and g.finish_reason == "stop"
        assert g.completion_tokens < 32


def test_n_samples_are_seeded_and_differ(engine, embedded_backend):
    p = SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=7)
    a = engine.generate(PROMPTS[:2], p)
    fresh = type(engine)(tokenizer_obj=embedded_backend.tokenizer, batch_size=3)
    b = fresh.generate(PROMPTS[:2], p)
    assert [len(r) for r in a] == [4, 4]
    assert [[g.text for g in r] for r in a] == [[g.text for g in r] for r in b]  # same seed, same samples
    assert len({g.text for g in a[0]}) > 1  # sampled, not four copies of one text
    c = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=16, temperature=1.0, n=4, seed=8))
    assert [[g.text for g in r] for r in c] != [[g.text for g in r] for r in a]
    greedy = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=8, n=3))[0]
    assert len(greedy) == 3 and len({g.text for g in greedy}) == 1


def test_resumed_turn_continues_the_partial_text(embedded_backend, engine):
    req = [("Describe a cat in two short sections.", "### 1. Looks\nThe cat")]
    p = SamplingParams(max_new_tokens=12)
    assert engine.continue_generation(req, p)[0][0].text == embedded_backend.continue_generation(req, p)[0][0].text


def test_option_logprobs_match_transformers(embedded_backend, engine):
    req, options = [("Pick a colour.", "My answer: "), ("Rate it 1-5.", "")], ["blue", "dark comedy", "5"]
    ours, hf = engine.option_logprobs(req, options), embedded_backend.option_logprobs(req, options)
    assert len(ours) == 2 and all(len(r) == 3 for r in ours)
    for a, b in zip(ours, hf):
        assert all(math.isfinite(x) and x < 0 for x in a)
        assert a == pytest.approx(b, abs=1e-3)


@pytest.mark.parametrize("name", ENGINES)
def test_bad_model_path_is_one_clear_error(tmp_path, name):
    cls = engine_class(name)
    with pytest.raises(ValueError, match="not a model directory"):
        cls(str(tmp_path))
    with pytest.raises(ValueError, match="compute type 'int3'"):
        cls(compute_type="int3")
    with pytest.raises(ValueError, match="runs on the CPU"):
        cls(device="cuda")
