"""How much can a stage still gain on a synthetic run's held-out users, and from what?

    python benchmarks/synthetic_headroom.py RUN_DIR [--k 8]

A TagPR student with compact chains (``chains.style: compact``) sees the ``k`` retrieved profile items and
learns the teacher's rule for reading its answer off them.  For the held-out users of a ``tagpr run`` on
synthetic data (LaMP-2 or LaMP-3), this prints one table, on the same users:

* each rule the teacher can fit over the shown items, and the one it fitted (what SFT imitates);
* the best reading of the same shown items with the generator's latent knowledge (LaMP-3: the most frequent score
  among the shown reviews of the query's quality; LaMP-2: of the shown labels that are one of the input's two
  candidate tags, the one the user prefers);
* the generator's profile-aware rule over the whole profile, and the oracle that knows each user's latent
  preference (LaMP-3: the median of the rounded score given quality and bias; LaMP-2: the user's preferred
  candidate, before the choice noise);
* every evaluated method of the run (``RUN_DIR/eval/*``);

each with how often it agrees with the fitted teacher and, where it does not, how many of those users it gets right
against the teacher; for LaMP-2 also whether each TagPR model's chains cite words of the input and conclude
those words' tag.

The gap between the fitted rule and the latent reading of the same items is what RL on the compact chain can
win without seeing more of the profile; the oracle bounds any method.  No model is run (seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from tagpr.data.synthetic import (RATING_NOISE, TAG_WORDS, generate_splits, preferred_tag, profile_aware_rule,
                                  review_quality)
from tagpr.pipeline.chains import ChainBuilder, ChainsConfig
from tagpr.pipeline.teachers import ChainRequest
from tagpr.runstate import read_jsonl
from tagpr.tasks import get_task


def _rating_oracle(scale, q: int, bias: float) -> int:
    """The median of ``scale.score(q + bias + N(0, RATING_NOISE))``: the MAE-optimal answer given the latents."""
    def below(x: float) -> float:  # P(q + bias + noise < x)
        return 0.5 * (1 + math.erf((x - q - bias) / (RATING_NOISE * math.sqrt(2))))

    return next(s for s in scale.values if s == scale.high or below(s + 0.5) >= 0.5)


def _latent_shown(task, example, items) -> str:
    """The shown items read with the generator's knowledge (falls back to the most similar item's output)."""
    outs = [task.item_output(it).strip() for it in items]
    syn = example.extra["synthetic"]
    if task.answers.ordered:  # the most frequent score among the shown reviews of the query's quality
        same = [o for o, it in zip(outs, items) if review_quality(str(it.get("text", ""))) == syn["quality"]]
        same = same or outs[:1]
        return max(same, key=lambda o: (same.count(o), -same.index(o)))
    cands = [c for c in syn["candidates"] if c in outs]  # shown labels that are one of the input's two tags
    if cands:  # the one this user prefers
        return preferred_tag(syn["order"], cands)
    return max(outs, key=lambda lab: (outs.count(lab), -outs.index(lab)))


def _oracle(task, example) -> str:
    syn = example.extra["synthetic"]
    if task.answers.ordered:
        return str(_rating_oracle(task.answers, syn["quality"], syn["bias"]))
    return preferred_tag(syn["order"], syn["candidates"])


def _label_chain_check(task, dev, name: str, rows) -> str | None:
    """LaMP-2 compact chains name the input's words and then a label (``<cross_reference>``): are the words in the
    input, is the label those words' tag (the generator's word lists), and how often is it right either way."""
    rows = [r for r in rows if r["id"] in dev and "<cross_reference>" in r.get("output", "")]
    tag_of = {w: t for t, ws in TAG_WORDS.items() for w in ws}
    n = in_input = 0
    right = {True: [], False: []}
    for r in rows:
        step = r["output"].split("<cross_reference>", 1)[1].split("</cross_reference>", 1)[0]
        quoted = re.findall(r'"([^"]+)"', step)
        if len(quoted) < 2:
            continue
        *cited, label = quoted
        n += 1
        query = task.retrieval_query(dev[r["id"]].input)
        in_input += all(w in query for w in cited)
        right[label in {tag_of.get(w) for w in cited}].append(r["answer"].strip() == dev[r["id"]].gold)
    if not n:
        return None
    acc = lambda xs: f"{sum(xs) / len(xs):.3f}" if xs else "-"  # noqa: E731
    return (f"{name:<32} {n:4d} chains: cited words all in the input {in_input / n:.3f}; label is their tag "
            f"{len(right[True]) / n:.3f} (accuracy {acc(right[True])}), is not (accuracy {acc(right[False])})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--k", type=int, default=None, help="shown items for the rules (default: the chains' k; the "
                                                         "evaluated methods keep what they were shown)")
    args = ap.parse_args()
    recipe = json.loads((args.run_dir / "recipe.json").read_text())
    run = recipe["run"]
    if run.get("data"):
        sys.exit(f"{args.run_dir}: trained on {run['data']}, not on synthetic users")
    task = get_task(run["task"])
    splits = generate_splits(task.name, run["synthetic_train_users"], run["synthetic_dev_users"],
                             seed=run.get("seed", 0))
    dev = {e.id: e for e in splits["dev"]}
    builder = ChainBuilder(ChainsConfig(**json.loads((args.run_dir / "chains.config.json").read_text())), args.run_dir)
    teacher, k = builder.teacher, args.k or builder.config.k
    evals = sorted(p for p in (args.run_dir / "eval").iterdir() if (p / "examples.jsonl").exists())
    records = {p.name: read_jsonl(p / "examples.jsonl", required=("id", "answer")) for p in evals}
    answers = {name: {r["id"]: r["answer"] for r in rows} for name, rows in records.items()}
    covered = {name: sum(i in a for i in dev) for name, a in answers.items()}
    most = max(covered.values(), default=0)
    for name in [n for n, c in covered.items() if c < most]:  # still running, or cut short
        print(f"left out: eval/{name} ({covered[name]} of the {most} users the others have)")
        del answers[name], records[name]
    ids = [i for i in dev if all(i in a for a in answers.values())]
    if not ids:
        sys.exit(f"{args.run_dir}: no evaluation of its held-out users yet")
    rules = {}
    for i in ids:
        e = dev[i]
        items = [e.profile[j] for j in builder.retriever.rank(e, task, k)]
        r = ChainRequest(task, e, items)
        for name in teacher.rule_error or [teacher.rule]:
            rules.setdefault(f"rule over the {k} shown: {name}", []).append(str(teacher.rule_answer(r, name)))
        rules.setdefault(f"teacher (fitted: {teacher.rule})", []).append(teacher.predict(e))
        rules.setdefault(f"the {k} shown, read with the latents", []).append(_latent_shown(task, e, items))
        rules.setdefault("profile-aware rule, whole profile", []).append(profile_aware_rule(task.name, e))
        rules.setdefault("oracle (latent preference)", []).append(_oracle(task, e))
    for name, a in answers.items():
        rules[f"eval: {name}"] = [a[i] for i in ids]
    golds = [dev[i].gold for i in ids]
    metric, _ = task.primary_metric
    print(f"{task.name}, {len(ids)} held-out synthetic users of {args.run_dir}")
    print(f"{'answers':<44} {metric:>8} {'agree':>6}  where they differ: right / teacher right")
    fitted = rules[f"teacher (fitted: {teacher.rule})"]
    same = lambda a, b: str(a).strip() == str(b).strip()  # noqa: E731
    for name, preds in rules.items():
        differ = [j for j, (a, b) in enumerate(zip(preds, fitted)) if not same(a, b)]
        right = sum(same(preds[j], golds[j]) for j in differ)
        teacher_right = sum(same(fitted[j], golds[j]) for j in differ)
        print(f"{name:<44} {task.metrics([str(p) for p in preds], golds)[metric]:8.4f} "
              f"{1 - len(differ) / len(ids):6.3f}  {len(differ):3d} users: {right:3d} / {teacher_right:3d}")
    if not task.answers.ordered:
        checks = [c for c in (_label_chain_check(task, dev, name, rows) for name, rows in records.items()
                              if name.startswith("tagpr")) if c]
        if checks:
            print("\nThe chains' <cross_reference>: the input's words they cite, and the label they conclude")
            print("\n".join(checks))


if __name__ == "__main__":
    main()
