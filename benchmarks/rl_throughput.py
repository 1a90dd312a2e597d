"""GRPO throughput on the embedded model: today's recipe vs the cheap-CPU default, same task and prompts.

    python benchmarks/rl_throughput.py [--steps 3] [--variants before,ct2,default] [--model DIR]

Each variant trains one stage (task reward) for ``--steps`` GRPO steps on the same synthetic LaMP-2 prompts
and reports completions per hour, completion tokens per step and seconds per step (the first step, which
warms up, is left out), and how much of a step went to rollouts and to the weight sync.  Variants:

- ``before``: the recipe as it was (transformers ``generate`` inside TRL, full fine-tuning, 4 completions
  of <= 352 tokens a step, items cut to 24 words);
- ``ct2``: the same settings with rollouts from CTranslate2 (one lever alone);
- ``default``: the new CPU default of ``recipes/rl_quick.yaml`` (CTranslate2 rollouts, the upper 10 of 30
  layers trained, the lower 20 and the embeddings frozen, 16 completions of <= 224 tokens from 4 prompts: the compact chain
  is ~200 tokens where the full one is ~300).

``--model`` takes an SFT checkpoint (completions then end where the chain ends); without it the base model
runs to the token limit, which is the cost of a completion at that limit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

BEFORE = dict(rollout_engine="trainer", batch_size=4, num_generations=4, max_completion_length=352,
              max_item_words=24, lora=False, freeze_layers=0, learning_rate=2e-6)
VARIANTS: dict[str, dict[str, Any]] = {
    "before": BEFORE,
    "ct2": {**BEFORE, "rollout_engine": "ct2"},
    "default": dict(rollout_engine="ct2", batch_size=16, num_generations=4, max_completion_length=224,
                    max_item_words=24, lora=False, freeze_layers=20, learning_rate=1e-5),
}


def run_variant(name: str, steps: int, model: str | None, examples: Any, out: Path) -> dict[str, Any]:
    from transformers import TrainerCallback

    from tagpr.training.rl import RLRecipe, read_reward_log, train_rl

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times.append(time.perf_counter() - self.t0)

    recipe = RLRecipe(task="LaMP-2", data="synthetic", out=str(out / name), model=model, k=4, max_steps=steps,
                      save_steps=10_000, stages=[{"name": "bench", "weights": {"task": 1.0, "tag": 0.5}}],
                      **VARIANTS[name])
    res = train_rl(recipe, callbacks=[Clock()], progress=False, examples=examples)

    log = read_reward_log(out / name / "1-bench" / "rewards.csv")
    timed = times[1:] or times
    per_step = sum(timed) / len(timed)
    stage = res["stages"][0]
    lengths = [r["completions/mean_length"] for r in log if "completions/mean_length" in r]
    completions = recipe.batch_size * recipe.grad_accum
    return {"variant": name, "completions/step": completions, "s/step": per_step,
            "completions/h": completions * 3600 / per_step,
            "tokens/completion": sum(lengths) / max(1, len(lengths)),
            "rollout s/step": stage.get("generate_seconds_total", 0) / max(1, len(times)),
            "sync s": stage.get("sync_seconds_mean", 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--variants", default="before,ct2,default")
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
    cols = ["variant", "completions/step", "tokens/completion", "s/step", "rollout s/step", "sync s",
            "completions/h", f"vs {rows[0]['variant']}"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(r["variant"], str(r["completions/step"]), f"{r['tokens/completion']:.0f}", f"{r['s/step']:.1f}",
                      f"{r['rollout s/step']:.1f}", f"{r['sync s']:.1f}", f"{r['completions/h']:.0f}",
                      f"{r['completions/h'] / base:.1f}x")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
