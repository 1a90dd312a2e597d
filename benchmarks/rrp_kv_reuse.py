"""RRP's resumed turns on the transformers backend: KV-cache reuse vs encoding the prompt again.

    python benchmarks/rrp_kv_reuse.py [--n 8] [--task LaMP-7]

The same examples (the shared LaMP-7 dev data when present, else synthetic LaMP-2 users) run through the
intervention controller three ways: one turn at a time encoding the prompt again at every resume, one
at a time resuming from the kept KV cache, and ``--batch-size`` turns together (prompt encoded again).
Greedy decoding: the answers must agree between the two one-at-a-time rows.  Ratios are against the first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED_LAMP  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--task", default="LaMP-7")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-tokens", type=int, default=32)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from tagpr.data.loading import load_split
    from tagpr.data.synthetic import generate
    from tagpr.evaluation import EvalConfig, EvalRun
    from tagpr.generation.hf import TransformersBackend
    from tagpr.rrp import InterventionController, build_rrp_prompt

    task = args.task
    if (SHARED_LAMP / "LaMP_7").exists() and task == "LaMP-7":
        exs, source = load_split(SHARED_LAMP, task, "dev")[: args.n], "shared"
    else:
        task = "LaMP-2" if task == "LaMP-7" else task
        exs, source = generate(task, args.n, seed=3), "synthetic"
    base = TransformersBackend(None, batch_size=1)
    run = EvalRun(EvalConfig(task=task, data="-", method="rrp"), "/tmp/unused", backend=base)
    prompts = [build_rrp_prompt(task, e.input, run.items_for(e)) for e in exs]
    rows = []
    for name, bs, reuse in (("one at a time, prompt encoded again", 1, False), ("one at a time, KV cache reused", 1, True),
                            (f"batch of {args.batch_size}, prompt encoded again", args.batch_size, False)):
        b = TransformersBackend(model_obj=base.model, tokenizer_obj=base.tokenizer, batch_size=bs, reuse_cache=reuse)
        ctl = InterventionController(b, task, chunk_tokens=args.chunk_tokens)
        from tagpr.generation import SamplingParams

        t0 = time.perf_counter()
        outs = []
        for i in range(0, len(prompts), bs):
            outs += [row[0] for row in ctl.run(prompts[i : i + bs], SamplingParams())]
        dt = time.perf_counter() - t0
        reused = b.prefix_cache.reused_tokens if b.prefix_cache else 0
        rows.append((name, dt / len(prompts), outs, reused))
    ref = rows[0][1]
    table = Table(title=f"RRP controller, {task} ({source}), {len(prompts)} examples, chunks of {args.chunk_tokens} tokens")
    for col in ("setting", "s/example", "speed vs first", "gen tokens/ex", "calls/ex", "prompt tokens reused", "same answers"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for name, spx, outs, reused in rows:
        same = sum(a.answer == b.answer for a, b in zip(outs, rows[0][2])) / len(outs)
        table.add_row(name, f"{spx:.2f}", f"{ref / spx:.2f}", f"{sum(o.completion_tokens for o in outs) / len(outs):.1f}",
                      f"{sum(o.calls for o in outs) / len(outs):.1f}", str(reused), f"{same:.2f}")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
