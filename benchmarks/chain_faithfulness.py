"""Do a LaMP-7 model's compact chains say what its prompt shows, and does its answer do what its chain says?

    python benchmarks/chain_faithfulness.py EVAL_DIR [EVAL_DIR ...]

For each ``tagpr eval --method tagpr`` directory on LaMP-7 (compact chains), and for the compact analytic teacher
on the same questions, every chain's checkable claims are verified against its prompt
(:func:`tagpr.pipeline.teachers.verify_rewrite_chain`, the ``faithful`` RL reward): the habits it says a shown tweet
shows (``[2] writes "&amp;" for "and"``), its checks of them against the input (``"and" is in the input``), whether
the changes it names are exactly the listed habits that apply, and whether its answer is the input with those
changes; and how many of the habits the teacher lists (the user's measured habits that a shown tweet shows) it
names (coverage).  The last column counts answers that change an input their chain said to keep.  The data, split,
retriever and ``k`` come from the first directory's ``config.json``.  No model is run (about a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tagpr.data.loading import load_split
from tagpr.pipeline.style import measure_habits
from tagpr.pipeline.teachers import KEEP_INPUT, AnalyticTeacher, ChainRequest, verify_rewrite_chain
from tagpr.retrieval import make_retriever, retrieve
from tagpr.runstate import read_jsonl
from tagpr.tasks import get_task

KEEP = f"<cross_reference>{KEEP_INPUT}</cross_reference>"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dirs", type=Path, nargs="+")
    args = ap.parse_args()
    cfg = json.loads((args.eval_dirs[0] / "config.json").read_text())
    task = get_task(cfg["task"])
    if not task.rewrites_input:
        sys.exit(f"{args.eval_dirs[0]}: {task.name} does not rewrite its input; this script reads LaMP-7 chains")
    examples = load_split(cfg["data"], task.name, cfg.get("split", "dev"))
    retriever = make_retriever(cfg.get("retriever", "bm25"))
    teacher = AnalyticTeacher(task, style="compact").fit(examples)
    prompts = {}
    for e in examples:
        items = retrieve(e, task, retriever, cfg.get("k", 4))
        prompts[e.id] = (e, items, task.retrieval_query(e.input), [task.item_output(it) for it in items],
                         measure_habits([task.item_output(p) for p in e.profile]))
    outputs = {"teacher (compact)": {i: teacher.write([ChainRequest(task, e, items)], 1)[0][0]
                                     for i, (e, items, *_) in prompts.items()}}
    for d in args.eval_dirs:
        outputs[str(d)] = {r["id"]: r["output"] for r in read_jsonl(d / "examples.jsonl", required=("id", "output"))}
    print(f"{task.name}, {len(prompts)} questions of {cfg['data']}; claims its prompt bears out")
    print(f"{'chains of':<34} {'n':>5} {'history true':>13} {'checks right':>13} {'decision':>9} {'follows':>8} "
          f"{'coverage':>9} {'score':>6} {'keep, yet changed':>18}")
    for name, outs in outputs.items():
        ids = [i for i in prompts if i in outs]
        claims = [verify_rewrite_chain(outs[i], *prompts[i][2:]) for i in ids]
        hist, chk, cov = ([sum((getattr(c, part) or (0, 0))[k] for c in claims) for k in (0, 1)]
                          for part in ("history", "checks", "coverage"))
        keep_changed = sum(KEEP in outs[i] and not c.follows for i, c in zip(ids, claims))
        share = lambda a: f"{a[0] / a[1]:.3f}" if a[1] else "-"  # noqa: E731
        print(f"{name[-34:]:<34} {len(ids):5d} {share(hist):>13} {share(chk):>13} "
              f"{sum(c.decision for c in claims) / len(ids):9.3f} {sum(c.follows for c in claims) / len(ids):8.3f} "
              f"{share(cov):>9} {sum(c.score for c in claims) / len(ids):6.3f} {keep_changed:18d}")


if __name__ == "__main__":
    main()
