"""The main job on the embedded defaults: synthetic users, zero-shot vs RAG, one comparison table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from tagpr.data.loading import write_examples
from tagpr.data.synthetic import generate_splits, rule_report
from tagpr.evaluation import EvalConfig, EvalRun, metrics_table
from tagpr.generation import make_backend
from tagpr.retrieval import BM25Retriever
from tagpr.runstate import write_json
from tagpr.tasks import get_task


def run_quickstart(out: str | Path, n: int = 40, tasks: Sequence[str] = ("LaMP-2", "LaMP-3", "LaMP-7"),
                   model: str | None = None, k: int = 4, overwrite: bool = False, seed: int = 0,
                   progress: bool = True, backend: str = "auto") -> list[dict[str, Any]]:
    out = Path(out)
    console = Console(width=max(Console().width, 110))
    t0 = time.perf_counter()
    generator = make_backend(backend, model)
    retriever = BM25Retriever()
    rows: list[dict[str, Any]] = []
    for name in tasks:
        task = get_task(name)
        data_dir = out / "data" / task.name.replace("-", "_")
        splits = generate_splits(task.name, n_train=max(n, 20), n_dev=n, seed=seed)
        for split, exs in splits.items():
            write_examples(exs, data_dir, task, split)
        for method in ("zero-shot", "rag"):
            cfg = EvalConfig(task=task.name, data=str(data_dir), split="dev", method=method, k=k, model=model, backend=backend)
            result = EvalRun(cfg, out / "runs" / f"{task.name}-{method}", backend=generator, retriever=retriever).run(
                overwrite=overwrite, progress=progress)
            rows.append(result)
        rows.extend(rule_report(task.name, splits["dev"]))
    write_json(out / "comparison.json", rows)
    who = "embedded SmolLM2-135M-Instruct" if model is None else model
    for name in tasks:
        task_rows = [r for r in rows if r["task"] == get_task(name).name]
        console.print(metrics_table(task_rows, title=f"{get_task(name).name}: synthetic users, {n} dev examples, {who}"))
    console.print(f"[dim]runs, predictions and per-example logs in {out}/runs; "
                  f"table in {out}/comparison.json; {time.perf_counter() - t0:.0f}s[/]")
    return rows
