"""RRP against zero-shot and RAG: quality, template adherence, interventions and generated tokens.

    python benchmarks/rrp_quality.py --task LaMP-7 --n 200                   # the shared LaMP-7 dev data
    python benchmarks/rrp_quality.py --task LaMP-2 --synthetic 60 --candidates 3

Every run is an ``EvalRun`` under ``--out`` (resumable: kill and rerun).  Rows: zero-shot, RAG (bm25, k),
RRP without intervention (the template prompt alone), RRP with intervention, and with ``--candidates N``
RRP with N sampled candidates combined by ``--aggregate``.  Ratios are against zero-shot in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED_LAMP  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="LaMP-7")
    ap.add_argument("--data", default=None, help="LaMP data dir (default: the shared data)")
    ap.add_argument("--synthetic", type=int, default=0, help="use N synthetic dev users instead (LaMP-2/3/7)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--model", default=None)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--budgets", default=None)
    ap.add_argument("--candidates", type=int, default=1)
    ap.add_argument("--aggregate", default="auto")
    ap.add_argument("--temperature", type=float, default=0.7, help="for the candidates row")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk-tokens", type=int, default=64)
    ap.add_argument("--out", default="runs/bench-rrp")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from tagpr.data.loading import write_examples
    from tagpr.data.synthetic import generate
    from tagpr.evaluation import EvalConfig, EvalRun
    from tagpr.generation import make_backend
    from tagpr.tasks import get_task

    task = get_task(args.task)
    out = Path(args.out) / task.name
    data = Path(args.data) if args.data else SHARED_LAMP
    if args.synthetic:
        data = out / "data"
        if not (data / task.official_id).exists():
            write_examples(generate(task.name, args.synthetic, seed=1), data / task.official_id, task.name, "dev")
        args.n = min(args.n, args.synthetic)
    backend = make_backend("transformers", args.model, batch_size=args.batch_size)
    base = dict(task=task.name, data=str(data), split="dev", k=args.k, limit=args.n, model=args.model,
                batch_size=args.batch_size)
    rrp = dict(method="rrp", budgets=args.budgets, chunk_tokens=args.chunk_tokens)
    configs = [("zero-shot", dict(method="zero-shot")), ("rag", dict(method="rag")),
               ("rrp-no-intervention", dict(rrp, intervene=False)), ("rrp", rrp)]
    if args.candidates > 1:
        configs.append((f"rrp-x{args.candidates}", dict(rrp, candidates=args.candidates,
                                                         aggregate=args.aggregate, temperature=args.temperature)))
    rows = []
    for name, kw in configs:
        run = EvalRun(EvalConfig(**{**base, **kw}), out / name, backend=backend)
        run.run()
        rows.append((name, run.rescore()))  # every row parsed by the current parser
    metric, _ = task.primary_metric
    cols = task.answers.metric_names
    table = Table(title=f"{task.name} dev ({'synthetic' if args.synthetic else data}), {rows[0][1]['n']} examples, "
                        f"{'embedded SmolLM2-135M-Instruct' if args.model is None else args.model}")
    for col in ("method", *cols, f"{metric} / zero-shot", "valid", "adherence", "interventions/ex", "gen tokens/ex"):
        table.add_column(col, justify="left" if col == "method" else "right")
    ref = rows[0][1][metric] or float("nan")
    for name, m in rows:
        table.add_row(name, *(f"{m[c]:.4f}" for c in cols), f"{m[metric] / ref:.3f}", f"{m['valid_answer_rate']:.3f}",
                      f"{m['template_adherence']:.3f}" if "template_adherence" in m else "",
                      f"{m['mean_interventions']:.2f}" if "mean_interventions" in m else "",
                      f"{m['mean_completion_tokens']:.1f}")
    Console(width=160).print(table)
    for name, m in rows:
        if "interventions_per_rule" in m:
            print(name, "interventions per example by rule:",
                  {k: round(v, 3) for k, v in m["interventions_per_rule"].items()})


if __name__ == "__main__":
    main()
