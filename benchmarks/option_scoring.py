"""Option scoring on the CPU (RRP's constrained answers): transformers (the baseline) vs CTranslate2 and OpenVINO.

    python benchmarks/option_scoring.py [--n 16] [--k 8] [--task LaMP-2] [--engines hf,ct2,openvino] [--model ID]

Each request is an official prompt with ``k`` retrieved profile items of a synthetic user and an empty answer turn;
every option of the task's label space (LaMP-2: 15 tags, LaMP-3: 5 scores) is scored as its continuation
(``option_logprobs``, summed log-probability).  Reports seconds per request, prompt tokens, the largest difference
of a score from the baseline's, how often the best option agrees with the baseline's, and the speed ratio.
"""

from __future__ import annotations

import argparse
import time

ENGINES = {"hf": "transformers", "ct2": "ct2", "openvino": "openvino"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--task", default="LaMP-2")
    ap.add_argument("--engines", default="hf,ct2,openvino")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from tagpr.data.synthetic import generate
    from tagpr.generation import close_backend, make_backend
    from tagpr.prompts import build_prompt
    from tagpr.retrieval import make_retriever, retrieve
    from tagpr.tasks import get_task

    task = get_task(args.task)
    options = task.answers.options()
    exs = generate(task.name, args.n, seed=0)
    retriever = make_retriever("bm25")
    requests = [(build_prompt(task, e.input, retrieve(e, task, retriever, args.k), max_length=2048), "") for e in exs]
    rows, base = [], None
    for name in args.engines.split(","):
        backend = make_backend(ENGINES[name], args.model)
        backend.option_logprobs(requests[:1], options[:2])  # warm-up (compiles the scorer)
        t0 = time.perf_counter()
        scores = [backend.option_logprobs([r], options)[0] for r in requests]  # one request a call, as RRP asks
        dt = time.perf_counter() - t0
        base = base or scores
        diff = max(abs(a - b) for s, t in zip(scores, base) for a, b in zip(s, t))
        agree = sum(max(range(len(s)), key=s.__getitem__) == max(range(len(t)), key=t.__getitem__)
                    for s, t in zip(scores, base)) / len(scores)
        tokens = sum(len(backend.tokenizer.encode(backend.render(p))) for p, _ in requests) / len(requests)
        rows.append(dict(engine=name, seconds=dt / len(requests), tokens=tokens, diff=diff, agree=agree))
        Console().print(rows[-1])
        close_backend(backend)
        del backend
    table = Table(title=f"{task.name} option scoring: {len(options)} options, {len(requests)} requests of k={args.k} "
                        f"items, {torch.get_num_threads()} CPU threads")
    for col in ("engine", "s / request", "prompt tokens", "max |score - " + rows[0]["engine"] + "|",
                "same best option", "speed vs " + rows[0]["engine"]):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["engine"], f"{r['seconds']:.3f}", f"{r['tokens']:.0f}", f"{r['diff']:.2g}",
                      f"{r['agree']:.0%}", f"{rows[0]['seconds'] / r['seconds']:.2f}x")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
