"""What the SFT and RL trainers share: loading the policy, LoRA settings, checkpoints, saving the result."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def load_policy(model: str | None, trust_remote_code: bool = False) -> tuple[str, Any, Any]:
    """``(resolved id/path, tokenizer, model)``: the embedded SmolLM2 when ``model`` is None; bf16 on a GPU,
    fp32 on the CPU; a pad token when the tokenizer has none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tagpr.embedded import resolve_lm

    model_id = resolve_lm(model)
    tok = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16 if on_gpu() else torch.float32,
                                              trust_remote_code=trust_remote_code)
    return model_id, tok, lm


def lora_config(r: int, alpha: int, dropout: float) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def freeze_lower_layers(model: Any, n: int) -> int:
    """Freeze the input embeddings (and a tied output head) and the lowest ``n`` decoder layers of ``model``
    (a transformers causal LM or a PEFT wrapper of one), so the backward pass stops at layer ``n``.  Returns
    the number of parameters left trainable."""
    if n > 0:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        layers = getattr(getattr(base, "model", base), "layers", None)
        if layers is None:
            raise ValueError(f"freeze_layers: {type(base).__name__} has no .model.layers to freeze")
        if n >= len(layers):
            raise ValueError(f"freeze_layers={n} would freeze all {len(layers)} layers; use at most {len(layers) - 1}")
        base.get_input_embeddings().requires_grad_(False)
        for layer in layers[:n]:
            layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def no_checkpointing(config_cls: Any) -> dict[str, Any]:
    """Activation checkpointing off (it slows small CPU runs); the field was renamed in recent versions."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {n: False for n in ("activation_checkpointing", "gradient_checkpointing") if n in names}


def last_checkpoint(out: Path) -> str | None:
    """The Trainer checkpoint with the highest step in ``out`` (None when there is none)."""
    cks = sorted((p for p in Path(out).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                 key=lambda p: int(p.name.split("-")[-1]))
    return str(cks[-1]) if cks else None


def checkpoint_step(path: str | None) -> int:
    return int(str(path).rsplit("-", 1)[-1]) if path else 0


def save_final(model: Any, tok: Any, out: Path, lora: bool) -> None:
    """Save the trained policy as safetensors in ``out``; LoRA adapters go to ``out/adapter`` and are merged."""
    if lora:
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
