"""`tagpr plan`: GPU recipes checked without a GPU, offline (parameter counts, memory per GPU, refusals)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagpr.cli import app
from tagpr.embedded import embedded_lm_dir
from tagpr.plan import (Job, Layout, ModelShape, estimate, make_plan, model_config, safetensors_param_count,
                        shipped_configs)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
runner = CliRunner()

QWEN7B = 7_615_616_512  # Qwen2.5-7B(-Instruct): "7.61B parameters, 6.53B non-embedding"
QWEN1_5B = 1_543_714_304  # Qwen2.5-1.5B(-Instruct): "1.54B, 1.31B non-embedding"


def _shape(model):
    return ModelShape.from_config(model_config(model)[0])


def test_parameter_count_of_the_embedded_model_matches_its_weights():
    d = embedded_lm_dir()
    if not (d / "model.safetensors").exists():
        pytest.skip(f"the embedded model is not converted in {d} (tagpr models prepare)")
    shape = _shape(None)
    real = safetensors_param_count(d, shape.tied)
    assert real == pytest.approx(shape.params, rel=0.005)
    assert shape.params == 134_515_008 == real  # exact, in fact


def test_shipped_qwen_configs_count_the_published_parameters():
    assert {"Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"} <= set(shipped_configs())
    q7 = _shape("Qwen/Qwen2.5-7B-Instruct")
    assert (q7.hidden, q7.intermediate, q7.layers, q7.heads, q7.kv_heads, q7.vocab, q7.tied) == \
        (3584, 18944, 28, 28, 4, 152064, False)
    assert q7.params == QWEN7B
    assert q7.params - q7.embedding_params - q7.head_params == pytest.approx(6.53e9, rel=1e-3)
    assert _shape("qwen/qwen2.5-1.5b-instruct").params == QWEN1_5B


def test_counts_match_transformers_and_peft_on_empty_models():
    """The formulas against the real model classes, built on the meta device (no weights): all parameters, and
    PEFT's LoRA on every linear layer."""
    pytest.importorskip("peft")
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from tagpr.training.common import lora_config

    for name in ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "smollm2-135m-instruct"):
        cfg = dict(model_config(name)[0])
        shape = ModelShape.from_config(cfg)
        config = AutoConfig.for_model(**cfg)
        with torch.device("meta"):  # (accelerate's init_empty_weights unties a tied LM head)
            model = AutoModelForCausalLM.from_config(config)
            assert sum(p.numel() for p in model.parameters()) == shape.params, name
            peft_model = get_peft_model(model, lora_config(8, 16, 0.0))
            lora = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert lora == shape.lora_params(8, shape.layers), name


def test_plan_of_the_7b_lora_recipe():
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_qwen7b_lora.yaml")])
    assert r.exit_code == 0, r.output
    for text in ("bf16 7.62B", "7,615,616,512", "weights", "gradients", "optimizer state", "activations",
                 "vLLM (colocate)", "fits", "tokens per optimizer step", "LoRA r=64"):
        assert text in r.output, text
    # one 80 GB GPU, as the recipe's header says
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_qwen7b_lora.yaml"), "--gpus", "1"])
    assert r.exit_code == 0, r.output


def test_plan_of_the_7b_full_recipe_on_its_zero3_layout():
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_qwen7b_full.yaml")])
    assert r.exit_code == 0, r.output
    for text in ("bf16 7.62B", "7,615,616,512", "ZeRO-3", "deepspeed_zero3.yaml", "vLLM server", "fits"):
        assert text in r.output, text


def test_full_fine_tuning_on_one_gpu_is_refused_with_what_to_change():
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_qwen7b_full.yaml"), "--gpus", "1"])
    assert r.exit_code == 2
    error = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "per GPU on 1 x 80 GB" in error[0]
    assert "lora: true" in error[0] and "--gpus 2 with ZeRO-3" in error[0]
    assert "does NOT fit" in r.output  # the table is shown before the refusal


def test_the_embedded_model_plan():
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_quick.yaml")])
    assert r.exit_code == 0, r.output
    assert "SmolLM2-135M" in r.output and "134,515,008" in r.output and "rollout KV cache" in r.output
    r = runner.invoke(app, ["plan", str(RECIPES / "sft_quick.yaml"), "--gpu-memory", "24"])
    assert r.exit_code == 0, r.output
    assert "(sft, 135M parameters)" in r.output and "max_length" in r.output


def test_model_override_and_an_unreachable_hub(tmp_path):
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_qwen7b_lora.yaml"), "--model", "Qwen/Qwen2.5-1.5B-Instruct"])
    assert r.exit_code == 0 and "1,543,714,304" in r.output, r.output
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_qwen7b_lora.yaml"), "--model", "nobody/no-such-model-xyz"])
    assert r.exit_code == 2
    assert "not shipped with tagpr" in r.output and len([x for x in r.output.splitlines() if x.startswith("error:")]) == 1


def test_memory_parts_follow_the_layout_and_the_recipe():
    shape = _shape("Qwen/Qwen2.5-7B-Instruct")
    job = Job(kind="rl", lora=False, lora_r=16, lora_dropout=0.0, freeze_layers=0, batch_size=4, grad_accum=4,
              prompt_tokens=700, completion_tokens=768, gradient_checkpointing=True, use_vllm=True,
              vllm_mode="server", num_generations=8)
    rows1, total1, trained, _ = estimate(job, shape, Layout(gpus=1), 80e9)
    parts = {r.name: r.bytes for r in rows1}
    assert parts["weights"] == 2 * QWEN7B and parts["gradients"] == 2 * QWEN7B and parts["optimizer state"] == 12 * QWEN7B
    rows8, total8, _, _ = estimate(job, shape, Layout(gpus=8, zero_stage=3), 80e9)
    parts8 = {r.name: r.bytes for r in rows8}
    assert parts8["optimizer state"] == 12 * QWEN7B / 8 and parts8["gradients"] == 2 * QWEN7B / 8
    assert parts8["activations"] == parts["activations"]  # sharding splits states, not activations
    _, no_ckpt, _, _ = estimate(Job(**{**job.__dict__, "gradient_checkpointing": False}), shape, Layout(gpus=8, zero_stage=3), 80e9)
    assert no_ckpt > total8 + 20e9  # without checkpointing the activations of 28 layers are kept


def test_a_colocated_vllm_share_too_small_for_the_weights_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text((RECIPES / "rl_qwen7b_lora.yaml").read_text().replace("vllm_gpu_memory_utilization: 0.3",
                                                                            "vllm_gpu_memory_utilization: 0.15"))
    plan = make_plan(recipe)
    assert not plan.fits and plan.total < 80e9
    assert plan.refusal.startswith("vllm_gpu_memory_utilization 0.15 gives the colocated vLLM 12 GB")
    assert "use vllm_gpu_memory_utilization 0.25" in plan.refusal and "vllm_mode: server" in plan.refusal
    # and on a 40 GB GPU, ZeRO-3 alone is no fix: the colocated vLLM's share stays short of its weights
    r = runner.invoke(app, ["plan", str(RECIPES / "rl_qwen7b_lora.yaml"), "--gpus", "1", "--gpu-memory", "40"])
    assert r.exit_code == 2 and "ZeRO-3" not in r.output.split("error:")[1] and "vllm_mode: server" in r.output
