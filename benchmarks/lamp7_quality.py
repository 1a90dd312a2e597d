"""Quality on the shared LaMP-7 data: copy-input floor vs zero-shot vs RAG, ROUGE-1/L.

    python benchmarks/lamp7_quality.py --n 200 [--model ID_OR_PATH] [--out runs/bench-lamp7]

Runs are resumable (kill and rerun: finished examples are kept).  Ratios are against the floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED_LAMP, lamp7_examples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="first N of the 989 shared dev examples")
    ap.add_argument("--model", default=None)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default="runs/bench-lamp7")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from tagpr.evaluation import EvalConfig, EvalRun
    from tagpr.generation import make_backend
    from tagpr.tasks import get_task

    exs = lamp7_examples(args.n)
    if exs is None:
        sys.exit(f"needs the shared LaMP-7 data at {SHARED_LAMP}/LaMP_7")
    task = get_task("LaMP-7")
    floor = task.metrics([task.retrieval_query(e.input) for e in exs], [e.gold for e in exs])
    rows = [("copy-input floor", floor, None)]
    backend = make_backend("transformers", args.model, batch_size=args.batch_size)
    for method in ("zero-shot", "rag"):
        cfg = EvalConfig(task="LaMP-7", data=str(SHARED_LAMP), split="dev", method=method, retriever="bm25",
                         k=args.k, limit=args.n, model=args.model, batch_size=args.batch_size)
        res = EvalRun(cfg, Path(args.out) / method, backend=backend).run()
        rows.append((f"{method}" + (f" (bm25, k={args.k})" if method == "rag" else ""), res, res))
    table = Table(title=f"LaMP-7 dev (shared), first {len(exs)} examples, "
                        f"{'embedded SmolLM2-135M-Instruct' if args.model is None else args.model}")
    for col in ("method", "ROUGE-1", "ROUGE-L", "R-1 / floor", "R-L / floor", "gen tokens/ex", "prompt tokens/ex"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, m, res in rows:
        table.add_row(name, f"{m['rouge-1']:.4f}", f"{m['rouge-L']:.4f}", f"{m['rouge-1'] / floor['rouge-1']:.3f}",
                      f"{m['rouge-L'] / floor['rouge-L']:.3f}",
                      "" if res is None else f"{res['mean_completion_tokens']:.1f}",
                      "" if res is None else f"{res['mean_prompt_tokens']:.1f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
