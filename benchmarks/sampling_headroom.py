"""What can RL's sharpening win? A model's greedy answers against the vote of its own samples.

    python benchmarks/sampling_headroom.py EVAL_DIR [--n 8] [--temperature 0.8]

GRPO raises the probability of the sampled completions that score above their group.  Where a policy's samples
mostly agree on a right answer its greedy decoding misses, that sharpening alone moves the greedy answer; where
they do not, RL has to teach the policy something it does not know.  For a TagPR evaluation (``EVAL_DIR``, made by
``tagpr eval --method tagpr``: its prompts, greedy answers, golds and model), this samples ``n`` completions of each
prompt from the same model and prints, with paired bootstrap intervals against the greedy answers:

* one sample, drawn at random from the ``n`` (what one rollout scores; the engine may return them sorted),
* the candidates combined by the task's own aggregate (``tagpr.rrp.aggregate``: a vote for labels, the median
  for ratings, MBR for text): the answer a perfectly sharpened policy would give,
* the best of the ``n`` by the task reward against the gold (pass@n: what is within the policy's reach at all),

then how often the samples agree with the greedy answer, and how many greedy answers the aggregate fixes or
breaks.  ``n`` x the evaluated examples sampled completions (``--limit`` cuts them): 200 examples x 8 took ~25 min
on 2 CPU cores with OpenVINO (run it alone).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--limit", type=int, default=None, help="the first N examples only")
    ap.add_argument("--batch", type=int, default=50, help="prompts per generate call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=Path, default=None,
                    help="a samples file this script wrote: print its table again without sampling")
    args = ap.parse_args()
    if args.n < 2:
        ap.error("--n must be at least 2")

    from rich.console import Console

    from tagpr.evaluation import run_records
    from tagpr.generation import make_backend
    from tagpr.generation.base import SamplingParams, close_backend
    from tagpr.methods import get_method
    from tagpr.rrp.aggregate import combine, resolve_aggregate
    from tagpr.stats import comparison_table, paired_bootstrap
    from tagpr.tags import check_chain, final_answer
    from tagpr.tasks import get_task

    config, records = run_records(args.eval_dir)
    if config.method != "tagpr":
        ap.error(f"{args.eval_dir} evaluated method {config.method!r}; this reads a TagPR evaluation")
    records = records[: args.limit] if args.limit else records
    task = get_task(config.task)
    how = resolve_aggregate("auto", task)
    answers: list[list[str]] = []
    if args.samples is not None:
        saved = json.loads(args.samples.read_text())
        args.n, args.temperature, answers = saved["n"], saved["temperature"], saved["answers"][: len(records)]
        if len(answers) != len(records):
            ap.error(f"{args.samples} holds {len(answers)} examples' samples, the evaluation {len(records)}")
    backend = make_backend("auto", config.model) if args.samples is None else None
    for i in range(0, len(records) if backend is not None else 0, args.batch):
        batch = records[i:i + args.batch]
        params = SamplingParams(max_new_tokens=config.max_new_tokens or get_method("tagpr").max_new_tokens,
                                temperature=args.temperature, n=args.n, seed=args.seed + i)
        for r, group in zip(batch, backend.generate([r["prompt"] for r in batch], params)):
            k = int(r.get("num_items", 0))
            answers.append([final_answer(g.text, task, check_chain(g.text, task, k)) for g in group])
        print(f"sampled {min(i + args.batch, len(records))}/{len(records)} prompts", flush=True)
    close_backend(backend)

    golds = [r["gold"] for r in records]
    greedy = [str(r["answer"]) for r in records]
    # a random one of the n: OpenVINO returns a prompt's samples sorted by their probability, most likely first
    pick = random.Random(args.seed)
    first = [a[pick.randrange(len(a))] for a in answers]
    combined = [combine(a, task, how) for a in answers]
    best = [max(a, key=lambda x: task.reward(x, g)) for a, g in zip(answers, golds)]
    preds = {"greedy (the evaluation)": greedy, "one sample": first, f"{how} of {args.n} samples": combined,
             f"best of {args.n} (pass@{args.n})": best}
    comp = paired_bootstrap(task, golds, preds, "greedy (the evaluation)", users=[r.get("user_id") for r in records])
    console = Console(width=120)
    console.print(comparison_table(comp, title=f"{config.model}: {len(records)} examples, {args.n} samples at "
                                               f"T={args.temperature}"))
    agree = Counter(round(4 * sum(x == g for x in a) / len(a)) / 4 for a, g in zip(answers, greedy))
    console.print("samples agreeing with the greedy answer (share of n: examples): "
                  + ", ".join(f"{k:.2f}: {agree[k]}" for k in sorted(agree)))
    reward = [(task.reward(c, g), task.reward(x, g)) for c, x, g in zip(combined, greedy, golds)]
    better, worse = sum(c > x for c, x in reward), sum(c < x for c, x in reward)
    console.print(f"{how} vs greedy: better on {better}, worse on {worse} of {len(reward)}")
    if backend is not None:
        out = args.eval_dir / f"sampling_headroom_n{args.n}.json"
        out.write_text(json.dumps({"n": args.n, "temperature": args.temperature, "answers": answers}, indent=1))
        console.print(f"samples: {out}")


if __name__ == "__main__":
    main()
