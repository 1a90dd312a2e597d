"""Generation engines on the CPU: transformers ``generate`` (the baseline) vs CTranslate2 and OpenVINO GenAI.

    python benchmarks/generation_engines.py [--n 96] [--max-new-tokens 64] [--engines hf,ct2,openvino] [--model ID]
    python benchmarks/generation_engines.py --engines ct2,openvino --model RUN/sft \
        --prompts "RUN/eval/tagpr: sft/examples.jsonl" --max-new-tokens 192 --n 64

Same greedy prompts for every engine, each at its default batch size: zero-shot LaMP-7 (the shared dev
examples; synthetic ones when ../shared is absent), or with ``--prompts`` the stored prompts of an evaluation
(its ``examples.jsonl``; e.g. a TagPR model's chains, the workload of every TagPR evaluation).  Reports
examples/s, new tokens/s, achieved GFLOPS (2 x parameters per prefilled or generated token), the share of
outputs identical to the baseline's, and the task's metric against the golds on the same examples, with the
ratio of examples/s to the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import lamp7_examples  # noqa: E402

ENGINES = {  # name -> (backend kind, options)
    "hf": ("transformers", {"batch_size": 16}),
    "hf-b64": ("transformers", {"batch_size": 64}),
    "ct2": ("ct2", {"compute_type": "float32"}),
    "ct2-int8": ("ct2", {"compute_type": "int8"}),
    "openvino": ("openvino", {"compute_type": "float32"}),
    "openvino-bf16": ("openvino", {"compute_type": "bfloat16"}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--engines", default="hf,ct2,openvino")
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompts", default=None, help="an evaluation's examples.jsonl: its stored prompts and golds")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from tagpr.data.synthetic import generate
    from tagpr.embedded import resolve_lm
    from tagpr.generation import SamplingParams, make_backend
    from tagpr.prompts import build_prompt
    from tagpr.tags import final_answer
    from tagpr.tasks import get_task

    if args.prompts:
        import json

        recs = [json.loads(line) for line in Path(args.prompts).read_text().splitlines()[:args.n] if line.strip()]
        task = get_task(json.loads((Path(args.prompts).parent / "config.json").read_text())["task"])
        prompts, golds = [r["prompt"] for r in recs], [r["gold"] for r in recs]
        workload = f"stored prompts of {Path(args.prompts).parent.name!r} ({task.name})"
    else:
        task = get_task("LaMP-7")
        exs = lamp7_examples(args.n) or generate("LaMP-7", args.n, seed=0)
        prompts = [build_prompt(task, e.input, None) for e in exs]
        golds = [e.gold for e in exs]
        workload = "zero-shot LaMP-7"
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(resolve_lm(args.model))).parameters())
    rows, base_texts = [], None
    for name in args.engines.split(","):
        kind, kw = ENGINES[name]
        backend = make_backend(kind, args.model, **kw)
        backend.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up
        t0 = time.perf_counter()
        out = [g[0] for g in backend.generate(prompts, params)]
        dt = time.perf_counter() - t0
        texts = [g.text for g in out]
        base_texts = base_texts or texts
        new = sum(g.completion_tokens for g in out)
        seen = new + sum(g.prompt_tokens for g in out)
        metrics = task.metrics([final_answer(t, task) for t in texts], golds)  # a chain's <answer>, else the text
        rows.append(dict(engine=name, eps=len(prompts) / dt, tps=new / dt, gflops=2 * n_params * seen / dt / 1e9,
                         same=sum(a == b for a, b in zip(texts, base_texts)) / len(texts),
                         metric=metrics[task.primary_metric[0]], seconds=dt))
        Console().print(rows[-1])
        del backend
    table = Table(title=f"greedy {workload}, {len(prompts)} prompts, <= {args.max_new_tokens} new tokens, "
                        f"{n_params / 1e6:.0f}M parameters, {torch.get_num_threads()} CPU threads")
    for col in ("engine", "seconds", "examples/s", "new tokens/s", "GFLOPS", "same text as " + rows[0]["engine"],
                task.primary_metric[0], "examples/s vs " + rows[0]["engine"]):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["engine"], f"{r['seconds']:.1f}", f"{r['eps']:.2f}", f"{r['tps']:.1f}", f"{r['gflops']:.0f}",
                      f"{r['same']:.0%}", f"{r['metric']:.4f}", f"{r['eps'] / rows[0]['eps']:.2f}x")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
