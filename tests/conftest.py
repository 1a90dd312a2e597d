import contextlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TAGPR_SHARED", REPO.parent / "shared"))
SHARED_LAMP7 = SHARED / "data" / "lamp" / "LaMP_7"


@pytest.fixture
def shared_lamp7() -> Path:
    if not (SHARED_LAMP7 / "dev_questions.json").exists():
        pytest.skip("../shared/data/lamp/LaMP_7 is not available")
    return SHARED_LAMP7


@contextlib.contextmanager
def restored_task_registry():
    """The task registry and its hooks as they were before the block (tests that register tasks or hooks of their
    own leave no trace)."""
    from tagpr import tasks

    live = (tasks.TASKS, tasks.SOURCES, tasks._ALIASES, tasks.HOOKS)
    saved = [dict(d) for d in live]
    try:
        yield
    finally:
        for d, old in zip(live, saved):
            d.clear()
            d.update(old)


@pytest.fixture
def registry():
    with restored_task_registry():
        yield


@pytest.fixture(scope="session")
def embedded_backend():
    """The embedded SmolLM2-135M through the transformers backend (converted once per cache)."""
    from tagpr.generation import make_backend

    return make_backend("transformers", None, batch_size=8)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden 32) with the embedded model's tokenizer and chat template, made to answer
    with digits and spaces: so its LaMP-3 ratings (the first number of a completion) differ within a group, and
    GRPO has advantages to learn from.  Dimension 0 of the residual stream is a constant (the embeddings set it,
    no layer writes it), and only the answer tokens read it in the output head.  Shared by the tests that train
    (tests/test_multiprocess.py, tests/test_user_tasks.py)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tagpr.embedded import resolve_lm

    d = tmp_path_factory.mktemp("tiny") / "model"
    tok = AutoTokenizer.from_pretrained(resolve_lm(None))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    answer = tok.convert_tokens_to_ids(["1", "2", "3", "4", "5", "\u0120"])  # digits and the space token
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        head = model.lm_head.weight
        head[:, 0] = 0.0
        head[answer, 0] = 3.0
        head[answer, 1:] = torch.randn(len(answer), cfg.hidden_size - 1)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d
