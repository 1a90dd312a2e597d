"""GRPO throughput on the embedded model: today's recipe vs the cheap-CPU default, same task and prompts.

    python benchmarks/rl_throughput.py [--steps 3] [--variants before,ct2-frozen,+head,+group,+shared,+drop,compact,default] [--model DIR]

Each variant trains one stage (task reward) for ``--steps`` GRPO steps on the same synthetic LaMP-2 prompts
and reports completions per hour, completion tokens per step and seconds per step (the first step, which
warms up, is left out), and how much of a step went to rollouts and to the weight sync.  Variants:

- ``before``: the recipe as it was (transformers ``generate`` inside TRL, full fine-tuning, 4 completions
  of <= 352 tokens a step, items cut to 24 words);
- ``ct2``: the same settings with rollouts from CTranslate2 (one lever alone);
- ``ct2-frozen``: the previous default (CTranslate2 rollouts, one prompt forward per completion, the upper 10 of
  30 layers trained, 16 completions of <= 224 tokens from 4 prompts, the full 9-tag prompt of ~520 tokens, and
  TRL's LM head scoring every position, prompt included, as it does off CUDA);
- ``+head``: that, with the LM head scoring only the completion tokens;
- ``+group``: that, with each GRPO group's prompt forwarded once by the rollout engine;
- ``+shared``: that, with each group's prompt forwarded once in the training pass too;
- ``+drop``: that, with zero-variance groups left out of the training pass;
- ``compact``: that, with the compact prompt (5 tags, ~390 tokens) that compact chains are trained on;
- ``default``: that, with 32 completions a step (8 prompts x 4): a decode step streams the weights once for
  twice the rows.  ``recipes/rl_quick.yaml``'s settings with CTranslate2 rollouts (its default until 2026-12-07);
- ``openvino``: that, with the rollouts from OpenVINO GenAI (``rollout_engine: openvino``, now the CPU default).

Every variant is measured with the same levers; ``zero_variance/dropped`` is the share of rows left out.

``--model`` takes an SFT checkpoint (completions then end where the chain ends); without it the base model
runs to the token limit, which is the cost of a completion at that limit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import step_clock  # noqa: E402

BEFORE = dict(rollout_engine="trainer", batch_size=4, num_generations=4, max_completion_length=352,
              max_item_words=24, lora=False, freeze_layers=0, learning_rate=2e-6, prompt_style="full",
              shared_prompt_pass="off", zero_variance_groups="keep")
FROZEN = dict(BEFORE, rollout_engine="ct2", batch_size=16, max_completion_length=224, freeze_layers=20,
              learning_rate=1e-5)
VARIANTS: dict[str, dict[str, Any]] = {
    "before": BEFORE,
    "ct2": {**BEFORE, "rollout_engine": "ct2"},
    "ct2-frozen": FROZEN,
    "+head": FROZEN,
    "+group": FROZEN,
    "+shared": {**FROZEN, "shared_prompt_pass": "auto"},
    "+drop": {**FROZEN, "shared_prompt_pass": "auto", "zero_variance_groups": "drop"},
    "compact": {**FROZEN, "shared_prompt_pass": "auto", "zero_variance_groups": "drop", "prompt_style": "compact"},
    "default": {**FROZEN, "shared_prompt_pass": "auto", "zero_variance_groups": "drop", "prompt_style": "compact",
                "batch_size": 32},
}
VARIANTS["openvino"] = {**VARIANTS["default"], "rollout_engine": "openvino"}
# the levers each variant leaves out (switched off here, for the benchmark only)
WITHOUT = {"before": {"head", "group"}, "ct2": {"head", "group"}, "ct2-frozen": {"head", "group"}, "+head": {"group"}}


def _levers(off: set[str]) -> Any:
    """Switch levers off for one variant: the completion-only LM head, the one prompt forward per group."""
    import contextlib
    from unittest import mock

    import tagpr.training.common as common
    import tagpr.training.rollouts as rollouts

    stack = contextlib.ExitStack()
    if "head" in off:
        stack.enter_context(mock.patch.object(common, "score_completions_only_on_cpu", lambda: False))
    if "group" in off:
        stack.enter_context(mock.patch.object(rollouts, "_runs", lambda rows: [(i, 1) for i in range(len(rows))]))
    return stack


def run_variant(name: str, steps: int, model: str | None, examples: Any, out: Path) -> dict[str, Any]:
    from tagpr.training.rl import RLRecipe, read_reward_log, train_rl

    times: list[float] = []
    recipe = RLRecipe(task="LaMP-2", data="synthetic", out=str(out / name), model=model, k=4, max_steps=steps,
                      save_steps=10_000, stages=[{"name": "bench", "weights": {"task": 1.0, "tag": 0.5}}],
                      **VARIANTS[name])
    import trl.trainer.utils as trl_utils

    use_triton = trl_utils._use_triton  # each variant starts from TRL's own LM-head setting
    try:
        with _levers(WITHOUT.get(name, set())):
            res = train_rl(recipe, callbacks=[step_clock(times)], progress=False, examples=examples)
    finally:
        trl_utils._use_triton = use_triton

    log = read_reward_log(out / name / "1-bench" / "rewards.csv")
    timed = times[1:] or times
    per_step = sum(timed) / len(timed)
    stage = res["stages"][0]
    lengths = [r["completions/mean_length"] for r in log if "completions/mean_length" in r]
    completions = recipe.batch_size * recipe.grad_accum
    from transformers import AutoTokenizer

    from tagpr.embedded import resolve_lm
    from tagpr.retrieval import make_retriever
    from tagpr.training.rl import rl_rows

    tok = AutoTokenizer.from_pretrained(resolve_lm(model))
    rows = rl_rows("LaMP-2", examples[:32], make_retriever("bm25"), 4, recipe.max_item_words, recipe.style())
    plens = sorted(len(tok.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True)["input_ids"])
                   for r in rows)
    return {"variant": name, "completions/step": completions, "s/step": per_step, "prompt tokens": plens[len(plens) // 2],
            "completions/h": completions * 3600 / per_step,
            "tokens/completion": sum(lengths) / max(1, len(lengths)),
            "rollout s/step": stage.get("generate_seconds_total", 0) / max(1, len(times)),
            "sync s": stage.get("sync_seconds_mean", 0.0),
            "dropped": sum(r.get("zero_variance/dropped", 0.0) for r in log) / max(1, len(log))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--variants", default="before,ct2-frozen,+head,+group,+shared,+drop,compact,default")
    ap.add_argument("--model", default=None, help="an SFT checkpoint (default: the embedded base model)")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from tagpr.data.synthetic import generate_splits

    examples = generate_splits("LaMP-2", 64, 2, seed=0)["train"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tagpr-rl-bench-") as tmp:
        for name in args.variants.split(","):
            rows.append(run_variant(name, args.steps, args.model, examples, Path(tmp)))
            Console().print(rows[-1])
    base = rows[0]["completions/h"]
    table = Table(title=f"GRPO on synthetic LaMP-2, {args.steps} steps a variant (first left out), "
                        f"{args.model or 'embedded SmolLM2-135M base'}, {torch.get_num_threads()} CPU threads")
    cols = ["variant", "completions/step", "prompt tokens", "tokens/completion", "s/step", "rollout s/step", "sync s",
            "rows dropped",
            "completions/h", f"vs {rows[0]['variant']}"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(r["variant"], str(r["completions/step"]), str(r["prompt tokens"]), f"{r['tokens/completion']:.0f}", f"{r['s/step']:.1f}",
                      f"{r['rollout s/step']:.1f}", f"{r['sync s']:.1f}", f"{r['dropped']:.0%}", f"{r['completions/h']:.0f}",
                      f"{r['completions/h'] / base:.1f}x")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
