"""PRMU scoring throughput on the CPU: batched with cached user embeddings vs one response at a time.

    python benchmarks/prmu_throughput.py --model PRMU_DIR --task LaMP-2 --data DIR [--split dev] [--n 64] [--group 4]

Each example gets ``--group`` responses (a GRPO group); the baseline scores them one call each with a
fresh user-embedding cache per call (no batching, no reuse).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--group", type=int, default=4)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from tagpr.data.loading import load_split
    from tagpr.prmu.reward import PRMUScorer

    exs = load_split(args.data, args.task, args.split)[: args.n]
    others = [e.gold or e.input for e in exs]
    examples = [e for e in exs for _ in range(args.group)]
    responses = [others[(i + j) % len(others)] for i in range(len(exs)) for j in range(args.group)]
    scorer = PRMUScorer(args.model, args.task)
    t0 = time.perf_counter()
    scorer.score(examples, responses)  # cold: encodes profiles, inputs and responses too
    t_cold = time.perf_counter() - t0
    scorer.users.clear()
    scorer.embedder.embed(responses)  # the encoder cost of responses is the same for both; time the scoring
    for e in exs:
        scorer.embedder.embed([e.input])

    t0 = time.perf_counter()
    for ex, r in zip(examples, responses):
        scorer.users.clear()
        scorer.score([ex], [r])
    t_one = time.perf_counter() - t0
    scorer.users.clear()
    t0 = time.perf_counter()
    scorer.score(examples, responses)
    t_batch = time.perf_counter() - t0
    n = len(responses)
    table = Table(title=f"PRMU scoring, {n} responses ({len(exs)} users x {args.group}), CPU")
    for col in ("mode", "responses/s", "ratio vs one-at-a-time"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    table.add_row("one at a time, no user cache", f"{n / t_one:,.0f}", "1.00")
    table.add_row("batched, user embedding cached per group", f"{n / t_batch:,.0f}", f"{t_one / t_batch:.2f}")
    table.add_row("batched, cold (encoding profiles + responses)", f"{n / t_cold:,.0f}", f"{t_one / t_cold:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
