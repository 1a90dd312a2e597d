"""``tagpr train sft``: supervised fine-tuning on tagged chains with TRL's ``SFTTrainer``.

Each chain record becomes a conversational prompt-completion pair: the prompt is TagPR's chat prompt
(``prompts.build_tagpr_messages``, the same one evaluation uses) and the completion the chain, so the
loss falls on the assistant turn only.  Settings come from a YAML recipe with CLI overrides; the
output directory holds its settings (``sft_recipe.json``), Trainer checkpoints (a killed run resumes from the
last one; ``--overwrite`` starts again), the final
model as safetensors (LoRA adapters merged; the adapter is kept in ``adapter/``), and a model card
``README.md`` with the settings, the chains' hash and the training-loss curve (``loss.png``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from tagpr.embedded import check_model
from tagpr.prompts import TAGPR_ITEM_WORDS, build_tagpr_messages, write_prompt_style
from tagpr.recipes import StrictModel, load_settings
from tagpr.runstate import RunDir, read_jsonl, write_json
from tagpr.training.common import (check_saveable, cpu_training_pass, freeze_lower_layers, is_main_process,
                                   last_checkpoint, load_policy, lora_config, no_checkpointing, on_gpu,
                                   prompt_style_callback, save_trained, wait_for_everyone, weight_change)

log = logging.getLogger(__name__)


class SFTRecipe(StrictModel):
    chains: list[str]
    out: str
    model: str | None = None  # None = the embedded SmolLM2-135M-Instruct
    task: str | None = None  # None = each chain record's own task
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, le=1.0)
    freeze_layers: int = Field(0, ge=0)  # freeze the embeddings and the lowest N decoder layers (shorter backward)
    max_steps: int = Field(60, ge=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float | None = Field(None, gt=0)  # None: 2e-4 with LoRA, 5e-5 full
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    max_length: int = Field(768, ge=32)
    max_item_words: int = Field(TAGPR_ITEM_WORDS, ge=1)
    logging_steps: int = Field(5, ge=1)
    save_steps: int = Field(20, ge=1)
    save_total_limit: int = Field(2, ge=1)
    keep_checkpoints: bool = False  # a finished run's checkpoints (weights + optimizer, ~3x the model) are deleted
    limit: int | None = Field(None, ge=1)
    seed: int = 0
    trust_remote_code: bool = False

    @field_validator("chains", mode="before")
    @classmethod
    def _one_file(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v

    @property
    def lr(self) -> float:
        return self.learning_rate or (2e-4 if self.lora else 5e-5)

    def identity(self) -> dict[str, Any]:
        """What must match to resume a run (step counts, logging and saving may change)."""
        return self.model_dump(exclude={"max_steps", "logging_steps", "save_steps", "save_total_limit",
                                        "keep_checkpoints"})


def load_recipe(path: str | Path | None, overrides: dict[str, Any]) -> SFTRecipe:
    """A YAML recipe (a top-level ``sft:`` section or the bare mapping) updated by non-None overrides."""
    return load_settings(SFTRecipe, path, "sft", overrides)


def read_chains(paths: Sequence[str | Path], limit: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """Chain records of every file, and a hash of the files' bytes (for the model card)."""
    h = hashlib.sha256()
    records: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such chains file")
        h.update(p.read_bytes())
        records += read_jsonl(p, ("task", "input", "items", "chain"))
    if not records:
        raise ValueError(f"no chains in {', '.join(map(str, paths))}")
    return records[:limit] if limit else records, h.hexdigest()[:16]


def chain_style(records: Sequence[dict[str, Any]]) -> str:
    """The one TagPR prompt form of a set of chain records (their ``style``; records without one are ``full``)."""
    styles = sorted({r.get("style", "full") for r in records})
    if len(styles) > 1:
        raise ValueError(f"the chains mix prompt styles {styles}: build them with one --style")
    return styles[0] if styles else "full"


def sft_rows(records: Sequence[dict[str, Any]], max_item_words: int = TAGPR_ITEM_WORDS, task: str | None = None) -> list[dict[str, Any]]:
    style = chain_style(records)
    return [{"prompt": build_tagpr_messages(task or r["task"], r["input"], r["items"], max_item_words=max_item_words,
                                            style=style),
             "completion": [{"role": "assistant", "content": r["chain"]}]} for r in records]


def check_lengths(rows: Sequence[dict[str, Any]], tok: Any, max_length: int) -> dict[str, Any]:
    """Token lengths of prompts and whole examples; a clear error when prompts leave no room for chains."""
    prompts, totals = [], []
    for r in rows:
        p = tok.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True)
        full = tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True)
        prompts.append(_n_tokens(p))
        totals.append(_n_tokens(full))
    fit = sum(t <= max_length for t in totals)
    no_room = sum(p >= max_length for p in prompts)
    if no_room == len(rows):
        raise ValueError(f"max_length {max_length} leaves no room for the chains: prompts take "
                         f"{sorted(prompts)[len(prompts) // 2]} tokens (median); raise --max-length")
    return {"prompt_median": sorted(prompts)[len(prompts) // 2], "total_median": sorted(totals)[len(totals) // 2],
            "total_max": max(totals), "fit_whole": fit, "truncated": len(rows) - fit}


def _n_tokens(encoded: Any) -> int:
    """Length of ``apply_chat_template(tokenize=True)`` output (a list of ids, or a mapping in transformers 5)."""
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return len(ids)


def _warmup(recipe: SFTRecipe) -> int:
    """Warmup steps from the ratio (recent transformers take a float ratio here, older ones an int only)."""
    return int(round(recipe.warmup_ratio * recipe.max_steps))


def run_dir(out: str | Path) -> RunDir:
    """An SFT run's directory: ``sft_recipe.json``, ``sft_summary.json``, ``checkpoint-*`` and the saved model (a
    directory of a run saved before ``sft_recipe.json`` existed is known by its summary or checkpoints)."""
    return RunDir(out, "sft_recipe.json", ("*",), "an SFT run", markers=("sft_summary.json", "checkpoint-*"),
                  owns=("sft_summary.json", "checkpoint-*", "adapter", "*.json", "*.safetensors", "*.bin", "*.pt",
                        "*.jinja", "*.txt", "*.model", "*.png", "README.md"))


def finished_differs(summary: dict[str, Any], recipe: SFTRecipe, data_hash: str) -> str | None:
    """How a finished run (its ``sft_summary.json``) differs from what ``recipe`` would train on the chains of
    ``data_hash``: None when it is that run."""
    diffs = []
    if summary.get("global_step") != recipe.max_steps:
        diffs.append(f"{summary.get('global_step')} steps (max_steps is now {recipe.max_steps})")
    if summary.get("chains_sha256_16") != data_hash:
        diffs.append(f"other chains (sha256 {summary.get('chains_sha256_16')}, now {data_hash})")
    return "; ".join(diffs) or None


def train_sft(recipe: SFTRecipe | str | Path | None = None, *, overwrite: bool = False, callbacks: Sequence[Any] = (),
              progress: bool = True, on_trainer: Callable[[Any], None] | None = None, **settings: Any) -> dict[str, Any]:
    """Fine-tune on tagged chains into ``out``; returns the summary written to ``sft_summary.json``.  A killed run
    resumes from its last checkpoint, a finished one is returned as it is (refused when its steps or chains differ
    from the recipe's, unless its checkpoints let it train on to more steps); ``overwrite`` starts again.

    ``recipe`` is an :class:`SFTRecipe`, or a YAML recipe whose ``sft:`` section is read; ``settings`` (SFTRecipe
    fields: ``chains``, ``out``, ``model``, ``max_steps``, ``lora``, ...) override it."""
    recipe = load_settings(SFTRecipe, recipe, "sft", settings)
    check_model(recipe.model)
    records, data_hash = read_chains(recipe.chains, recipe.limit)  # a bad chains file fails before any import
    run_dir(recipe.out).start(recipe, SFTRecipe.identity, overwrite, main=is_main_process(), barrier=wait_for_everyone,
                              inputs=(recipe.model, *recipe.chains))
    out = Path(recipe.out)
    done = out / "sft_summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        differs = finished_differs(summary, recipe, data_hash)
        resumable = any(out.glob("checkpoint-*")) and summary.get("chains_sha256_16") == data_hash \
            and recipe.max_steps > summary.get("global_step", 0)
        if differs is None and not any(out.glob("checkpoint-*")):
            return summary  # finished (its checkpoints are gone): nothing to resume
        if differs is not None and not resumable:
            raise ValueError(f"{out} holds a finished SFT run with {differs}; use --overwrite to train it again")

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    rows = sft_rows(records, recipe.max_item_words, recipe.task)
    style = chain_style(records)  # the prompt form, recorded with the model and each checkpoint
    ds = Dataset.from_list(rows)
    cuda = on_gpu()
    model_id, tok, model = load_policy(recipe.model, recipe.trust_remote_code)
    lengths = check_lengths(rows, tok, recipe.max_length)
    if lengths["truncated"]:
        log.warning("%d of %d examples are longer than max_length %d (their chain ends are cut off; longest %d tokens)",
                    lengths["truncated"], len(rows), recipe.max_length, lengths["total_max"])
    peft_config = lora_config(recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout) if recipe.lora else None
    args = SFTConfig(
        output_dir=str(out), max_steps=recipe.max_steps, per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum, learning_rate=recipe.lr, lr_scheduler_type="cosine",
        warmup_steps=_warmup(recipe), logging_steps=recipe.logging_steps, save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit, max_length=recipe.max_length, completion_only_loss=True,
        report_to="none", seed=recipe.seed, use_cpu=not cuda, bf16=cuda, disable_tqdm=not progress,
        **no_checkpointing(SFTConfig),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config,
                         callbacks=[prompt_style_callback(style), *callbacks])
    if not progress:
        from tagpr.console import without_log_printer

        without_log_printer(trainer)
    freeze_lower_layers(trainer.model, recipe.freeze_layers)  # after TRL's PEFT wrapping; the optimizer is made in train()
    check_saveable(trainer, recipe.lora)
    if on_trainer is not None:
        on_trainer(trainer)
    ckpt = last_checkpoint(out)
    if ckpt is None and any(out.glob("checkpoint-*")):
        raise ValueError(f"{out}: no usable checkpoint to resume from")
    with cpu_training_pass(cuda):  # the prompt positions carry no loss: TRL's head projected them anyway
        result = trainer.train(resume_from_checkpoint=ckpt)
    save_trained(trainer, tok, out, recipe.lora)  # every process gathers, the main one writes
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {"model": model_id, "examples": len(records), "tokens": lengths, "chains_sha256_16": data_hash,
               "global_step": trainer.state.global_step, "resumed_from": ckpt, "train_loss": result.training_loss,
               "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in history], "recipe": recipe.model_dump()}
    summary["weight_change"] = weight_change(out, model_id) if is_main_process() else None  # from where it began
    if is_main_process():
        write_prompt_style(out, style)
        write_json(done, summary)
        write_model_card(out, summary)
        if not recipe.keep_checkpoints:  # the run is finished: its final weights are saved, no resume needs these
            for ck in out.glob("checkpoint-*"):
                shutil.rmtree(ck, ignore_errors=True)
    wait_for_everyone()  # every process returns a finished run directory
    return summary


def write_model_card(out: Path, summary: dict[str, Any]) -> None:
    curve = summary["loss_curve"]
    if curve:
        from tagpr.reports import plot_loss

        plot_loss(curve, out / "loss.png")
    rec = summary["recipe"]
    rows = "\n".join(f"| {c['step']} | {c['loss']:.4f} |" for c in curve)
    text = f"""---
library_name: transformers
tags: [tagpr, personalization, lamp, sft, trl]
base_model: {summary['model']}
---
# TagPR SFT checkpoint

Fine-tuned with `tagpr train sft` (TRL `SFTTrainer`, loss on the assistant turn only) on tagged reasoning
chains: {summary['examples']} chains from {', '.join(rec['chains'])} (sha256 of the files, first 16 hex:
`{summary['chains_sha256_16']}`).

| setting | value |
|---|---|
| base model | `{summary['model']}` |
| LoRA | {rec['lora']}{f" (r={rec['lora_r']}, alpha={rec['lora_alpha']}; merged, adapter in adapter/)" if rec['lora'] else ''} |
| steps | {summary['global_step']} (batch {rec['batch_size']} x accumulation {rec['grad_accum']}) |
| learning rate | {rec['learning_rate'] or ('2e-4' if rec['lora'] else '5e-5')} (cosine, warmup {rec['warmup_ratio']}) |
| max length | {rec['max_length']} tokens |
| final train loss | {summary['train_loss']:.4f} |

Evaluate: `tagpr eval --method tagpr --model {out} --task TASK --data DIR`.

## Training loss

![loss](loss.png)

| step | loss |
|---|---|
{rows}
"""
    (out / "README.md").write_text(text, encoding="utf-8")
