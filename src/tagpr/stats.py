"""Paired bootstrap intervals for comparison tables: which differences to a reference row are real?

Every method of a comparison is scored on the same examples.  :func:`paired_bootstrap` resamples *users*
with replacement (a cluster bootstrap: a user's examples go in or out together, since one user's answers
are not independent draws), recomputes every metric of every method on the same resample, and reports
per method the metric with its percentile interval, the difference to the reference row (method minus
reference) with its interval, and whether that interval excludes 0.  An example without a user id is a
cluster of its own, so a split without user ids (LaMP's user-based splits: one question per user) is
resampled by example.

Metrics are those of the task's answer space (:class:`tagpr.scoring.AnswerSpace`).  Point estimates *are* its
``metrics`` (and the mean of its ``reward``).  Resamples need per-example parts, which the answer space gives
from its per-example rules (the label lookup of ``classification_metrics``, ``rating_value``, ``rouge_f``, the
reward) and combines as the corpus metric combines them: accuracy, MAE, ROUGE and the reward are means; RMSE is
the root of the mean squared error; macro-F1 is recomputed on each resample from per-label true-positive,
predicted and gold counts (it is not a mean of per-example values).  Each call checks that this combination on
the full sample equals the answer space's ``metrics`` (for generation the metric is the mean of the same
``rouge_f`` values, and ``tests/test_stats.py`` checks it), so the two cannot drift apart silently.  Unparsable predictions score
as scoring says (a wrong label, the worse end of the scale for a rating, ROUGE 0 for empty text); nothing here
raises on them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tagpr import scoring
from tagpr.tasks import LaMPTask, get_task

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
REWARD = scoring.REWARD  # the mean task reward, bootstrapped beside the official metrics
LOWER_IS_BETTER = frozenset(m for space in scoring.ANSWER_SPACES if not space.higher_is_better for m in space.metric_names)
_TOL = 1e-12  # differences this small are 0 (identical methods)


class StatsError(ValueError):
    """Runs that cannot be compared (no golds, different data, unknown reference...): a user error."""


# ------------------------------------------------------------------------------- per-example parts
def example_parts(task: LaMPTask | str, preds: Sequence[object], golds: Sequence[object]) -> dict[str, np.ndarray]:
    """Per-example contributions to the metrics of ``task`` (arrays of length ``len(golds)``): its answer space's
    :meth:`~tagpr.scoring.AnswerSpace.example_parts`.

    classification: ``correct`` (1/0, as ``classification_metrics`` counts it), ``pred`` and ``gold`` label
    indices (-1 = outside the label list); rating: ``abs_error`` and ``squared_error`` of
    ``rating_value`` (an unparsable prediction is the worse end of the scale); generation: ``rouge-1`` and
    ``rouge-L`` F of each example; every kind: ``reward`` (the task reward).  Never raises on predictions.
    """
    if len(preds) != len(golds):
        raise StatsError(f"{len(preds)} predictions for {len(golds)} golds")
    return get_task(task).answers.example_parts(preds, golds)


# --------------------------------------------------------------------------------------- results
@dataclass
class MetricStats:
    value: float
    ci: tuple[float, float] | None  # None with fewer than 2 clusters
    diff: float | None = None  # method - reference; None on the reference row
    diff_ci: tuple[float, float] | None = None
    significant: bool = False  # the interval of the difference excludes 0
    better: bool | None = None  # the difference favours this method (by the metric's direction)


@dataclass
class MethodStats:
    method: str
    n: int
    users: int
    metrics: dict[str, MetricStats]


@dataclass
class Comparison:
    task: str
    reference: str
    metric: str  # the metric tables show by default (the task's primary one)
    n: int  # examples every method was scored on
    users: int  # resampled clusters
    unit: str  # "users" (user ids known) or "examples"
    resamples: int
    seed: int
    confidence: float
    rows: list[MethodStats]
    dropped: dict[str, int] = field(default_factory=dict)  # examples of a run missing from another run

    def row(self, method: str) -> MethodStats:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(method)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Comparison":
        def ms(m: Mapping[str, Any]) -> MetricStats:
            tup = lambda x: None if x is None else (float(x[0]), float(x[1]))  # noqa: E731
            return MetricStats(m["value"], tup(m["ci"]), m.get("diff"), tup(m.get("diff_ci")),
                               bool(m.get("significant")), m.get("better"))

        rows = [MethodStats(r["method"], r["n"], r["users"], {k: ms(v) for k, v in r["metrics"].items()}) for r in d["rows"]]
        return cls(**{**{k: v for k, v in d.items() if k in cls.__dataclass_fields__}, "rows": rows})


# -------------------------------------------------------------------------------------- bootstrap
def _clusters(users: Sequence[object | None] | None, n: int) -> tuple[np.ndarray, int, str]:
    """Cluster index of each example; an example without a user id is its own cluster."""
    if users is None or all(u is None for u in users):
        return np.arange(n), n, "examples"
    keys: dict[object, int] = {}
    idx = np.array([keys.setdefault(("user", str(u)) if u is not None else ("example", i), len(keys))
                    for i, u in enumerate(users)], dtype=np.int64)
    return idx, len(keys), "users"


def resample_counts(rng: np.random.Generator, clusters: int, resamples: int) -> np.ndarray:
    """(resamples, clusters) draw counts: each row draws ``clusters`` clusters with replacement."""
    draws = rng.integers(0, clusters, size=(resamples, clusters))
    flat = draws + (np.arange(resamples) * clusters)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * clusters).reshape(resamples, clusters)


@dataclass
class Bootstrap:
    """Point metrics and resampled metrics of several methods on the same resamples."""

    point: dict[str, dict[str, float]]  # method -> metric -> value on the full sample
    samples: dict[str, dict[str, np.ndarray]]  # method -> metric -> (resamples,) values
    clusters: int
    unit: str  # "users" or "examples"


def bootstrap_samples(task: LaMPTask | str, golds: Sequence[object], predictions: Mapping[str, Sequence[object]],
                      users: Sequence[object | None] | None = None, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> Bootstrap:
    """Every metric of every method (method -> parsed answers aligned with ``golds``) on ``resamples`` cluster
    resamples: ``users`` (one id per example; None = the example is its own cluster; no list = resample
    examples) are drawn with replacement, each bringing all its examples; every method sees the same draws."""
    t = get_task(task)
    space = t.answers
    if not golds:
        raise StatsError("no examples to compare")
    if resamples < 1:
        raise StatsError("need resamples >= 1")
    n = len(golds)
    if users is not None and len(users) != n:
        raise StatsError(f"{len(users)} user ids for {n} examples")
    cluster, n_clusters, unit = _clusters(users, n)
    sizes = np.bincount(cluster, minlength=n_clusters).astype(float)
    methods = list(predictions)

    # per-cluster sums of every method's columns, side by side: a resample's sums are its counts @ these
    point: dict[str, dict[str, float]] = {}
    blocks, spans = [], []
    start = 0
    for m in methods:
        preds = list(predictions[m])
        parts = example_parts(t, preds, golds)
        cols = space.metric_columns(parts)
        whole = space.metrics_from_sums(cols.sum(axis=0)[None, :], np.array([float(n)]))
        full = {k: float(v[0]) for k, v in whole.items()}
        if not space.closed:
            # the free-text metrics are the mean of the same rouge_f values: a second ROUGE pass would only cost time
            official = {k: full[k] for k in space.metric_names}
        else:
            official = space.metrics([scoring._as_text(p) for p in preds], [str(g) for g in golds])
            for k, v in official.items():  # one definition: the resampled combination must be scoring's metric
                if not math.isclose(full[k], v, rel_tol=1e-9, abs_tol=1e-12):
                    raise RuntimeError(f"tagpr.stats and tagpr.scoring disagree on {k} for {m!r}: {full[k]} vs {v}")
        point[m] = {**official, REWARD: full[REWARD]}
        per_cluster = np.zeros((n_clusters, cols.shape[1]))
        np.add.at(per_cluster, cluster, cols)
        blocks.append(per_cluster)
        spans.append((start, start + cols.shape[1]))
        start += cols.shape[1]
    per_cluster_all = np.hstack(blocks)

    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 4_000_000 // max(n_clusters, per_cluster_all.shape[1], 1)))
    boot: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in methods}
    for s in range(0, resamples, chunk):
        counts = resample_counts(rng, n_clusters, min(chunk, resamples - s)).astype(float)
        sums = counts @ per_cluster_all
        total = counts @ sizes
        for m, (a, b) in zip(methods, spans):
            for k, v in space.metrics_from_sums(sums[:, a:b], total).items():
                boot[m].setdefault(k, []).append(v)
    samples = {m: {k: np.concatenate(v) for k, v in d.items()} for m, d in boot.items()}
    return Bootstrap(point, samples, n_clusters, unit)


def paired_bootstrap(task: LaMPTask | str, golds: Sequence[object], predictions: Mapping[str, Sequence[object]],
                     reference: str, users: Sequence[object | None] | None = None, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> Comparison:
    """Metrics, percentile intervals and differences to ``reference`` (method minus reference, with the
    interval of the paired differences and whether it excludes 0) of every method in ``predictions``; see
    :func:`bootstrap_samples`.  With fewer than 2 clusters there are no intervals and nothing is significant."""
    if reference not in predictions:
        raise StatsError(f"reference {reference!r} is not one of the methods: {', '.join(predictions)}")
    if not 0 < confidence < 1:
        raise StatsError("need 0 < confidence < 1")
    t = get_task(task)
    bs = bootstrap_samples(t, golds, predictions, users, resamples=resamples, seed=seed)
    point, samples, n_clusters, unit = bs.point, bs.samples, bs.clusters, bs.unit
    n = len(golds)
    methods = list(predictions)

    alpha = (1 - confidence) / 2
    q = [alpha, 1 - alpha]
    has_ci = n_clusters >= 2

    def interval(x: np.ndarray) -> tuple[float, float] | None:
        if not has_ci:
            return None
        lo, hi = np.quantile(x, q)
        return float(lo), float(hi)

    rows = []
    for m in methods:
        stats: dict[str, MetricStats] = {}
        for k in point[m]:
            st = MetricStats(point[m][k], interval(samples[m][k]))
            if m != reference:
                d = point[m][k] - point[reference][k]
                st.diff = 0.0 if abs(d) <= _TOL else d
                st.diff_ci = interval(samples[m][k] - samples[reference][k])
                st.significant = st.diff_ci is not None and (st.diff_ci[0] > _TOL or st.diff_ci[1] < -_TOL)
                st.better = None if st.diff == 0 else (st.diff > 0) != (k in LOWER_IS_BETTER)
            stats[k] = st
        rows.append(MethodStats(m, n, n_clusters, stats))
    primary, _ = t.primary_metric
    return Comparison(t.name, reference, primary, n, n_clusters, unit, resamples, seed, confidence, rows)


# ---------------------------------------------------------------------------------------- records
UNITS = ("auto", "users", "examples")


def compare_records(task: LaMPTask | str, runs: Mapping[str, Sequence[Mapping[str, Any]]], reference: str,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE,
                    unit: str = "auto") -> Comparison:
    """:func:`paired_bootstrap` on evaluation records (``examples.jsonl`` lines: ``id``, ``gold``, parsed
    ``answer``, optional ``user_id``) of several runs, paired by example id on the examples all runs share.

    ``unit``: what is resampled: ``users`` (the records' user ids: intervals for new users), ``examples``
    (intervals for new questions of these users; with few users, e.g. the six of the shared real LaMP-3, the only
    unit that can resolve anything), ``auto`` = users when the records have user ids."""
    if unit not in UNITS:
        raise StatsError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
    if reference not in runs:
        raise StatsError(f"reference {reference!r} is not one of the runs: {', '.join(runs)}")
    by_run: dict[str, dict[str, Mapping[str, Any]]] = {}
    for name, recs in runs.items():
        if not recs:
            raise StatsError(f"{name}: no finished examples")
        no_gold = [r.get("id") for r in recs if r.get("gold") is None]
        if no_gold:
            raise StatsError(f"{name}: example id={no_gold[0]!r} has no gold (a split without outputs cannot be scored)")
        by_run[name] = {str(r["id"]): r for r in recs}
    first = next(iter(by_run.values()))
    ids = [i for i in first if all(i in d for d in by_run.values())]
    if not ids:
        raise StatsError(f"the runs share no example id ({', '.join(runs)}): were they made on the same split?")
    golds, users = [], []
    for i in ids:
        gs = {str(d[i]["gold"]).strip() for d in by_run.values()}
        if len(gs) > 1:
            raise StatsError(f"example id={i!r} has different golds in different runs: were they made on the same data?")
        golds.append(str(first[i]["gold"]))
        users.append(next((d[i]["user_id"] for d in by_run.values() if d[i].get("user_id") is not None), None))
    preds = {name: [d[i].get("answer") for i in ids] for name, d in by_run.items()}
    if unit == "users" and all(u is None for u in users):
        raise StatsError("--unit users: the records carry no user ids")
    comp = paired_bootstrap(task, golds, preds, reference, None if unit == "examples" else users,
                            resamples=resamples, seed=seed, confidence=confidence)
    comp.dropped = {name: len(d) - len(ids) for name, d in by_run.items() if len(d) > len(ids)}
    return comp


def compare_run_dirs(runs: Mapping[str, str | Path], reference: str, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0, confidence: float = DEFAULT_CONFIDENCE, unit: str = "auto") -> Comparison:
    """:func:`compare_records` on evaluation run directories (name -> directory) of one task."""
    from tagpr.evaluation import run_records

    loaded = {name: run_records(path) for name, path in runs.items()}
    tasks = {get_task(cfg.task).name for cfg, _ in loaded.values()}
    if len(tasks) > 1:
        raise StatsError(f"the runs are on different tasks ({', '.join(sorted(tasks))})")
    return compare_records(tasks.pop(), {name: recs for name, (_, recs) in loaded.items()}, reference,
                           resamples=resamples, seed=seed, confidence=confidence, unit=unit)


# ----------------------------------------------------------------------------------------- tables
def metric_cells(comp: Comparison, row: MethodStats, metric: str) -> tuple[str, str, str]:
    """A row's cells for ``metric`` in every comparison table: value [CI], difference to the reference [CI]
    (``reference`` on its own row), significance (``* better``, ``* worse``, ``no``)."""
    st = row.metrics[metric]
    value = f"{st.value:.4f}" + (f" [{st.ci[0]:.4f}, {st.ci[1]:.4f}]" if st.ci else "")
    if row.method == comp.reference:
        return value, "reference", ""
    diff = f"{st.diff:+.4f}" + (f" [{st.diff_ci[0]:+.4f}, {st.diff_ci[1]:+.4f}]" if st.diff_ci else "")
    sig = ("* better" if st.better else "* worse") if st.significant else "no"
    return value, diff, sig


def _check_metric(comp: Comparison, metric: str | None) -> str:
    metric = metric or comp.metric
    if comp.rows and metric not in comp.rows[0].metrics:
        raise StatsError(f"metric {metric!r} is not one of {', '.join(comp.rows[0].metrics)}")
    return metric


def caption(comp: Comparison, metric: str | None = None) -> str:
    metric = _check_metric(comp, metric)
    pct = f"{100 * comp.confidence:g}%"
    direction = "lower" if metric in LOWER_IS_BETTER else "higher"
    over = (f"{comp.users} users ({comp.n} examples)" if comp.unit == "users"
            else f"{comp.n} examples")
    text = (f"Paired bootstrap over {over}, {comp.resamples} resamples, seed "
            f"{comp.seed}; {metric}: {direction} is better; Δ = method - {comp.reference}; "
            f"* = the {pct} interval of Δ excludes 0.")
    if comp.users < 2:
        text += " Fewer than 2 clusters: no intervals."
    if comp.dropped:
        text += " Unpaired examples left out: " + ", ".join(f"{k} {v}" for k, v in comp.dropped.items()) + "."
    return text


def comparison_table(comp: Comparison, metric: str | None = None, title: str | None = None):
    """A rich Table (fits 100 columns): method, metric [CI], Δ vs the reference [CI], significance."""
    from rich.table import Table

    metric = _check_metric(comp, metric)
    pct = f"{100 * comp.confidence:g}%"
    table = Table(title=title or f"{comp.task}: {metric} vs {comp.reference}", caption=caption(comp, metric),
                  caption_justify="left")
    table.add_column("method", overflow="fold", max_width=28)
    table.add_column(f"{metric} [{pct} CI]", justify="right", no_wrap=True)
    table.add_column(f"Δ vs {comp.reference} [{pct} CI]", justify="right", no_wrap=True)
    table.add_column("sig.", no_wrap=True)
    for r in comp.rows:
        table.add_row(r.method, *metric_cells(comp, r, metric))
    return table


def comparison_markdown(comp: Comparison, metric: str | None = None) -> str:
    """The same table as Markdown, with its caption below."""
    metric = _check_metric(comp, metric)
    pct = f"{100 * comp.confidence:g}%"
    lines = [f"| method | {metric} [{pct} CI] | Δ vs {comp.reference} [{pct} CI] | sig. |", "|---|---:|---:|---|"]
    for r in comp.rows:
        lines.append("| " + " | ".join((r.method, *metric_cells(comp, r, metric))) + " |")
    return "\n".join(lines) + "\n\n" + caption(comp, metric) + "\n"


def collect_run_dirs(paths: Sequence[str | Path]) -> dict[str, Path]:
    """Row name -> evaluation run directory.  A directory without ``config.json`` but with ``eval/*/config.json``
    (a ``tagpr run`` output) stands for its evaluation runs, in the order of its ``comparison.json``.  A row is
    named after its directory (the path as given when two names collide)."""
    found: list[tuple[str, Path, str]] = []  # name, directory, path as given
    for given in paths:
        p = Path(given)
        if not p.is_dir():
            raise StatsError(f"{p}: no such directory")
        if (p / "config.json").is_file() or not (p / "eval").is_dir():
            found.append((p.name or str(p), p, str(given)))
            continue
        subs = {d.name: d for d in sorted((p / "eval").iterdir()) if (d / "config.json").is_file()}
        order: list[str] = []
        try:
            comp = json.loads((p / "comparison.json").read_text(encoding="utf-8"))
            order = [r["method"] for r in comp.get("rows", []) + comp.get("ablations", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        names = [n for n in dict.fromkeys(order) if n in subs] + [n for n in subs if n not in order]
        if not names:
            raise StatsError(f"{p}: no evaluation runs in {p / 'eval'}")
        found += [(n, subs[n], str(Path(given) / "eval" / n)) for n in names]
    counts: dict[str, int] = {}
    for name, _, _ in found:
        counts[name] = counts.get(name, 0) + 1
    out: dict[str, Path] = {}
    for name, d, given in found:
        key = name if counts[name] == 1 else given
        if key in out:
            raise StatsError(f"{given}: given twice")
        out[key] = d
    return out


def resolve_reference(runs: Mapping[str, Path], reference: str | None) -> str:
    """The row named ``reference`` (a row name or a run directory's path); the first row when None."""
    if not runs:
        raise StatsError("no runs to compare")
    if reference is None:
        return next(iter(runs))
    if reference in runs:
        return reference
    target = Path(reference).resolve()
    for name, d in runs.items():
        if d.resolve() == target:
            return name
    raise StatsError(f"--reference {reference!r} is not one of the runs: {', '.join(runs)}")
