"""Generation throughput: batched vs one-at-a-time with the transformers backend.

    python benchmarks/generation_batching.py [--n 32] [--batch-size 16] [--max-new-tokens 32] [--model ID]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import lamp7_examples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from tagpr.data.synthetic import generate
    from tagpr.generation import SamplingParams, make_backend

    exs = lamp7_examples(args.n) or generate("LaMP-7", args.n, seed=0)
    prompts = [e.input for e in exs]
    backend = make_backend("transformers", args.model, batch_size=1)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    backend.generate(prompts[:2], params)  # warm-up
    rows = []
    for bs in (1, args.batch_size):
        backend.batch_size = bs
        t0 = time.perf_counter()
        out = backend.generate(prompts, params)
        dt = time.perf_counter() - t0
        toks = sum(g[0].completion_tokens for g in out)
        rows.append((bs, len(prompts) / dt, toks / dt))
    table = Table(title=f"greedy generation, {len(prompts)} LaMP-7 prompts, <= {args.max_new_tokens} new tokens, "
                        f"{torch.get_num_threads()} CPU threads")
    for col in ("batch size", "examples/s", "new tokens/s", "ratio vs batch 1"):
        table.add_column(col, justify="right")
    for bs, eps, tps in rows:
        table.add_row(str(bs), f"{eps:.2f}", f"{tps:.1f}", f"{eps / rows[0][1]:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
