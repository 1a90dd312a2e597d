"""Is the analytic teacher right on real data?  Its final answers against the trivial floors.

    python benchmarks/teacher_quality.py [--boot 2000] [--seed 0] [--synthetic]

* LaMP-7 (shared dev, 989 examples): the teacher's answer (the input tweet with this user's measured
  habits, ``tagpr/pipeline/style.py``) against copying the input; then each kind of habit alone, which
  is how ``style.DEFAULT_KINDS`` was chosen (a kind is applied only if it raises ROUGE-1 and ROUGE-L).
* LaMP-3 (shared, six real users, 240 questions): the teacher's score against always "5", the user's most
  frequent profile score and the user's rounded mean score.  MAE and RMSE.

Differences come with a paired bootstrap 95% CI over examples (numpy only).  ``--synthetic`` adds the
synthetic users the unit tests use (teacher vs the profile-blind rules).  No model, CPU only, ~20 s.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED_LAMP  # noqa: E402


def paired_ci(diff: np.ndarray, boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile CI of the mean of per-example differences, resampling examples with replacement."""
    idx = rng.integers(0, len(diff), size=(boot, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def rmse_ci(err_a: np.ndarray, err_b: np.ndarray, boot: int, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, len(err_a), size=(boot, len(err_a)))
    d = np.sqrt((err_a[idx] ** 2).mean(axis=1)) - np.sqrt((err_b[idx] ** 2).mean(axis=1))
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def fmt_ci(lo: float, hi: float, digits: int = 4) -> str:
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def lamp7_rows(data: Path, boot: int, rng: np.random.Generator) -> tuple[str, list[list[str]], dict]:
    from tagpr.data.loading import load_split
    from tagpr.pipeline import style
    from tagpr.pipeline.teachers import AnalyticTeacher
    from tagpr.scoring import rouge_f
    from tagpr.tasks import get_task

    task = get_task("LaMP-7")
    exs = load_split(data, task, "dev", require_golds=True)
    golds = [e.gold for e in exs]
    copy = [task.retrieval_query(e.input) for e in exs]
    teacher = AnalyticTeacher(task).fit(exs)
    answers = [teacher.predict(e) for e in exs]
    compact = AnalyticTeacher(task, style="compact").fit(exs)  # the habits a shown tweet (bm25, k=4) shows
    habits = [style.measure_habits(task.item_output(p) for p in e.profile) for e in exs]

    def per_example(preds: list[str]) -> np.ndarray:
        return np.array([rouge_f(p, g) for p, g in zip(preds, golds)])  # (n, 2): ROUGE-1, ROUGE-L

    floor = per_example(copy)
    rows, summary = [], {}
    systems = [("copy the input (floor)", copy), ("analytic teacher", answers),
               ("  its compact chains (habits a shown tweet shows)", [compact.predict(e) for e in exs])]
    systems += [(f"  copy + {k} only", [style.rewrite(x, h, (k,))[0] for x, h in zip(copy, habits)])
                for k in style.KINDS]
    for name, preds in systems:
        s = per_example(preds)
        r1, rl = s.mean(axis=0)
        d = s - floor
        changed = sum(p.strip() != c.strip() for p, c in zip(preds, copy))
        rows.append([name, f"{r1:.4f}", f"{rl:.4f}", f"{r1 / floor[:, 0].mean():.4f}", f"{rl / floor[:, 1].mean():.4f}",
                     f"{d[:, 0].mean():+.5f} {fmt_ci(*paired_ci(d[:, 0], boot, rng), 5)}",
                     f"{d[:, 1].mean():+.5f} {fmt_ci(*paired_ci(d[:, 1], boot, rng), 5)}", str(changed)])
        summary[name.strip()] = {"rouge-1": float(r1), "rouge-L": float(rl)}
    metrics = task.metrics(answers, golds)  # the one definition of the metric: must agree with the per-example mean
    assert math.isclose(metrics["rouge-1"], summary["analytic teacher"]["rouge-1"], abs_tol=1e-9)
    title = f"LaMP-7 shared dev, {len(exs)} examples: teacher answer vs copying the input tweet"
    head = ["method", "ROUGE-1", "ROUGE-L", "R-1 / floor", "R-L / floor", "d R-1 vs floor [95% CI]",
            "d R-L vs floor [95% CI]", "changed"]
    return title, [head, *rows], summary


def lamp3_rows(data: Path, boot: int, rng: np.random.Generator) -> tuple[str, list[list[str]], dict]:
    from tagpr.data.loading import load_split
    from tagpr.pipeline.teachers import AnalyticTeacher
    from tagpr.tasks import get_task

    task = get_task("LaMP-3")
    exs = load_split(data, task, "dev", require_golds=True)
    golds = [e.gold for e in exs]
    g = np.array([float(x) for x in golds])
    teacher = AnalyticTeacher(task).fit(exs)  # fitted on profile items only (no question review is in a profile)

    def most_frequent(e) -> str:
        return Counter(str(p["score"]).strip() for p in e.profile).most_common(1)[0][0]

    def rounded_mean(e) -> str:
        s = [float(p["score"]) for p in e.profile]
        return str(int(math.floor(sum(s) / len(s) + 0.5)))

    systems = [("always 5 (profile-blind floor)", ["5"] * len(exs)),
               ("user's most frequent score", [most_frequent(e) for e in exs]),
               ("user's rounded mean score", [rounded_mean(e) for e in exs]),
               ("analytic teacher", [teacher.predict(e) for e in exs])]
    err = {name: np.array([float(p) for p in preds]) - g for name, preds in systems}
    teach = err["analytic teacher"]
    head = ["method", "MAE", "RMSE", "teacher - it: d MAE [95% CI]", "d RMSE [95% CI]"]
    rows, summary = [], {}
    for name, preds in systems:
        m = task.metrics(preds, golds)
        summary[name] = m
        if name == "analytic teacher":
            rows.append([name, f"{m['mae']:.4f}", f"{m['rmse']:.4f}", "", ""])
            continue
        d = np.abs(teach) - np.abs(err[name])
        dr = math.sqrt((teach ** 2).mean()) - math.sqrt((err[name] ** 2).mean())
        rows.append([name, f"{m['mae']:.4f}", f"{m['rmse']:.4f}", f"{d.mean():+.4f} {fmt_ci(*paired_ci(d, boot, rng))}",
                     f"{dr:+.4f} {fmt_ci(*rmse_ci(teach, err[name], boot, rng))}"])
    users = sorted({e.id.split("-")[0] for e in exs})
    per_user = {u: [i for i, e in enumerate(exs) if e.id.split("-")[0] == u] for u in users}
    for name in ("user's most frequent score", "analytic teacher"):
        maes = " ".join(f"{np.abs(err[name][ix]).mean():.2f}" for ix in per_user.values())
        rows.append([f"  per user: {name}", maes, "", "", ""])
    title = f"LaMP-3 shared, {len(users)} real users, {len(exs)} questions: teacher score vs the floors"
    return title, [head, *rows], summary


def synthetic_rows() -> tuple[str, list[list[str]], dict]:
    from tagpr.data.synthetic import generate_splits, profile_blind_rules
    from tagpr.pipeline.teachers import AnalyticTeacher
    from tagpr.tasks import get_task

    rows, summary = [["task", "method", "metric"]], {}
    for task_name, seed in (("LaMP-2", 11), ("LaMP-3", 12), ("LaMP-7", 0)):
        task = get_task(task_name)
        splits = generate_splits(task_name, 200, 150, seed=seed)
        golds = [e.gold for e in splits["dev"]]
        teacher = AnalyticTeacher(task).fit(splits["train"])
        systems = [("analytic teacher", [teacher.predict(e) for e in splits["dev"]])]
        systems += [(f"blind: {n}", [rule(e) for e in splits["dev"]])
                    for n, rule in profile_blind_rules(task_name).items()]
        for name, preds in systems:
            m = task.metrics(preds, golds)
            summary[f"{task_name} {name}"] = m
            rows.append([task_name, name, ", ".join(f"{k} {v:.4f}" for k, v in m.items())])
    return "Synthetic users (150 dev users per task; what tests/test_chains.py exercises)", rows, summary


def print_table(title: str, rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n{title}")
    for j, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_LAMP), help="directory with LaMP_7/ and LaMP_3/ (official schema)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="also the synthetic users of the unit tests")
    args = ap.parse_args()
    data = Path(args.data)
    rng = np.random.default_rng(args.seed)
    done = False
    if (data / "LaMP_7" / "dev_questions.json").exists():
        print_table(*lamp7_rows(data, args.boot, rng)[:2])
        done = True
    if (data / "LaMP_3" / "dev_questions.json").exists():
        print_table(*lamp3_rows(data, args.boot, rng)[:2])
        done = True
    if args.synthetic:
        print_table(*synthetic_rows()[:2])
        done = True
    if not done:
        sys.exit(f"no LaMP_7/ or LaMP_3/ under {data} (and no --synthetic)")


if __name__ == "__main__":
    main()
