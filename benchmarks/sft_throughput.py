"""SFT step time and peak memory on the embedded model, lever by lever, on the quickstart's chains.

    python benchmarks/sft_throughput.py [--steps 4] [--variants trl,+head,+keep,micro2,micro1] [--chains FILE]

Each variant trains ``--steps`` SFT steps of every layer (the quickstart's recipe: batch 4, lr 1e-4) in a
process of its own, so its peak RSS and its allocator start clean; the first step, which warms up, is left out
of the step time.  Variants:

- ``trl``: TRL's SFT as it comes on the CPU: its fused LM head projects every position, the prompt's
  included (it keeps tile shapes fixed for compilers), and glibc hands freed blocks back to the kernel;
- ``+head``: the head projects only the completion positions (the only ones with a loss);
- ``+keep``: that, with freed memory kept by the process while it trains (``tagpr.cpu.freed_memory_kept``);
  the default of ``tagpr train sft`` on the CPU;
- ``micro2``: the default with micro-batches of 2 and 2 accumulation steps (the same 4 examples a step): less
  padding and smaller activations;
- ``micro1``: one example at a time, 4 accumulation steps.

Without ``--chains`` it writes the quickstart's chains (synthetic LaMP-3, 120 users, compact analytic chains).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import step_clock  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "trl": {"off": ["head", "keep"]},
    "+head": {"off": ["keep"]},
    "+keep": {"off": []},
    "micro2": {"off": [], "batch_size": 2, "grad_accum": 2},
    "micro1": {"off": [], "batch_size": 1, "grad_accum": 4},
}


def one(name: str, chains: str, steps: int, out: str) -> dict[str, Any]:
    """Train one variant in this process; returns its figures."""
    from unittest import mock

    import tagpr.training.common as common
    import tagpr.training.sft as sft
    from tagpr.cpu import peak_rss_gb

    times: list[float] = []
    v = VARIANTS[name]
    recipe = sft.SFTRecipe(chains=[chains], out=out, max_steps=steps, batch_size=v.get("batch_size", 4),
                           grad_accum=v.get("grad_accum", 1), learning_rate=1e-4, max_length=768, save_steps=10_000,
                           logging_steps=1)
    with contextlib.ExitStack() as stack:
        if "head" in v["off"]:
            stack.enter_context(mock.patch.object(common, "score_completions_only_on_cpu", lambda: False))
        if "keep" in v["off"]:
            stack.enter_context(mock.patch.object(common, "freed_memory_kept", contextlib.nullcontext))
        res = sft.train_sft(recipe, progress=False, callbacks=[step_clock(times)])
    timed = times[1:] or times
    return {"variant": name, "s/step": sum(timed) / len(timed), "peak GB": peak_rss_gb(),
            "loss": res["loss_curve"][-1]["loss"]}


def quickstart_chains(tmp: Path) -> str:
    """The quickstart's chains: synthetic LaMP-3 users, compact analytic chains (2 samples, k = 4)."""
    cli = [sys.executable, "-m", "tagpr.cli"]
    subprocess.run([*cli, "data", "synth", "--task", "LaMP-3", "--out", str(tmp / "data"), "--train-users", "120",
                    "--dev-users", "4"], check=True, capture_output=True)
    out = tmp / "chains"
    subprocess.run([*cli, "chains", "build", "--task", "LaMP-3", "--data", str(tmp / "data"), "--split", "train",
                    "--style", "compact", "--samples", "2", "--labeller", "none", "--out", str(out), "--no-progress"],
                   check=True, capture_output=True)
    return str(out / "chains.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--chains", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # a child: one variant, its figures as one JSON line
        print(json.dumps(one(args.one, args.chains, args.steps, args.out)))
        return

    import torch
    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory(prefix="tagpr-sft-bench-") as tmp:
        chains = args.chains or quickstart_chains(Path(tmp))
        for name in args.variants.split(","):
            cmd = [sys.executable, __file__, "--one", name, "--chains", chains, "--steps", str(args.steps),
                   "--out", str(Path(tmp) / name)]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            Console().print(rows[-1])
    base = rows[0]["s/step"]
    table = Table(title=f"SFT of every layer, 4 examples a step, {args.steps} steps a variant (first left out), "
                        f"embedded SmolLM2-135M, {torch.get_num_threads()} CPU threads")
    for c in ["variant", "s/step", "peak RSS GB", "loss at the last step", f"speed vs {rows[0]['variant']}"]:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(r["variant"], f"{r['s/step']:.1f}", f"{r['peak GB']:.2f}", f"{r['loss']:.4f}",
                      f"{base / r['s/step']:.2f}x")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
