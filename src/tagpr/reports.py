"""Every table and plot of a run, and ``tagpr report RUN_DIR``: one self-contained HTML page.

Plots (matplotlib, set up once here): the comparison's rewards with their intervals (``comparison.png``), RL
reward curves per stage (``rl/rewards.png``), the SFT loss (``sft/loss.png``) and tag frequencies
(``chains.tags.png``); each is a ``*_figure`` function, saved to a file by ``plot_*`` or embedded in the
report.  Tables: the Markdown comparison of ``tagpr run`` (``comparison.md``) and the report's HTML ones.

The report (:func:`write_report`) reads what ``tagpr run`` wrote and shows the comparison with its bootstrap
intervals, reward curves per RL stage, tag distributions, and a browser of the held-out examples of every
evaluated method: the profile items the prompt showed, those the chain cites highlighted, next to the tagged
chain with each tag coloured and invalid chains flagged.  Model output and data are untrusted text: the
template escapes everything (jinja2 autoescaping), the page loads nothing (figures are ``data:`` URIs) and its
Content-Security-Policy forbids scripts, so a chain holding ``<script>`` shows as text.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagpr.tags import CITE_RE, TAGS, parse_chain
from tagpr.tasks import LaMPTask, get_task

# one colour per tag (matplotlib's tab10 order), for the chains in the browser and the tag plots
TAG_COLOURS: dict[str, str] = dict(zip(TAGS, ("#1f77b4", "#9467bd", "#2ca02c", "#ff7f0e", "#e377c2", "#17becf",
                                             "#bcbd22", "#8c564b", "#d62728")))
DEFAULT_MAX_EXAMPLES = 200  # examples per method in the browser (the page stays light with large evaluations)


# ------------------------------------------------------------------------------------------ plots
def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` (PNG or SVG by the suffix) and close it."""
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return Path(path)


def figure_data_uri(fig: Any) -> str:
    """``fig`` as an SVG ``data:`` URI (the report embeds its figures: it loads nothing), and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tagpr"}):  # text stays text; stable ids
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def comparison_figure(rows: Sequence[dict[str, Any]], task: str, stats: Any = None) -> Any:
    """Mean task reward per row, with its bootstrap interval (``stats``, a ``tagpr.stats.Comparison``) as error
    bars, and tag validity."""
    from tagpr.stats import REWARD

    plt = pyplot()
    labels = [r["method"] for r in rows]
    means = [r.get("mean_reward", 0.0) for r in rows]
    yerr = None
    if stats is not None:
        cis = [stats.row(r["method"]).metrics[REWARD].ci for r in rows]
        if all(ci is not None for ci in cis):
            yerr = [[max(0.0, m - ci[0]) for m, ci in zip(means, cis)], [max(0.0, ci[1] - m) for m, ci in zip(means, cis)]]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 3.4))
    ax.bar(range(len(rows)), means, yerr=yerr, capsize=3 if yerr else 0, color="#4c72b0",
           label="mean task reward" + (f" ({100 * stats.confidence:g}% CI)" if yerr else ""))
    tv = [(i, r["tag_validity"]) for i, r in enumerate(rows) if "tag_validity" in r]
    if tv:
        ax.plot(*zip(*tv), "o", color="#dd8452", label="tag validity")
    ax.set_xticks(range(len(rows)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"{task}: held-out examples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_comparison(rows: Sequence[dict[str, Any]], path: str | Path, task: str, stats: Any = None) -> Path:
    """``comparison.png`` of ``tagpr run`` (:func:`comparison_figure`)."""
    return save_figure(comparison_figure(rows, task, stats), path)


def rewards_figure(rows: Sequence[dict[str, Any]], stages: Sequence[str]) -> Any:
    """One panel per stage: the mean of each reward component and the weighted total, by step (rows of
    ``rewards.csv``, as ``tagpr.training.rl.read_reward_log`` reads them); None without rows."""
    if not rows:
        return None
    from matplotlib.ticker import MaxNLocator

    from tagpr.training.rewards import REWARD_NAMES

    plt = pyplot()
    stages = [s for s in stages if any(r["stage"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.2), squeeze=False, sharey=True)
    for ax, st in zip(axes[0], stages):
        mine = [r for r in rows if r["stage"] == st]
        for key, label in [("reward", "weighted total")] + [(f"rewards/{n}/mean", n) for n in REWARD_NAMES]:
            pts = [(r["step"], r[key]) for r in mine if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
        ax.set_title(st)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("mean reward")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_rewards(rows: Sequence[dict[str, Any]], stages: Sequence[str], path: str | Path) -> Path | None:
    """``rewards.png`` of an RL run (:func:`rewards_figure`); None without rows."""
    fig = rewards_figure(rows, stages)
    return None if fig is None else save_figure(fig, path)


def loss_figure(curve: Sequence[dict[str, Any]]) -> Any:
    """SFT train loss by step (``sft_summary.json``'s ``loss_curve``)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    fig.tight_layout()
    return fig


def plot_loss(curve: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """``loss.png`` of an SFT run (:func:`loss_figure`)."""
    return save_figure(loss_figure(curve), path)


def tags_figure(freq: dict[str, int], title: str = "") -> Any:
    """Steps per tag of one set of chains, as horizontal bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(list(freq)[::-1], list(freq.values())[::-1], color="#4477aa")
    ax.set_xlabel("steps with this tag")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_tags(freq: dict[str, int], png: str | Path, title: str = "") -> Path:
    """The tag-distribution plot of ``tagpr chains stats`` (:func:`tags_figure`)."""
    return save_figure(tags_figure(freq, title), png)


def tag_sources_figure(sources: Sequence[dict[str, Any]]) -> Any:
    """One stacked bar per source (training chains, each evaluated TagPR model): its steps per chain, a segment
    per tag in the tag's colour; ``sources``: ``{"name", "chains", "counts"}`` as :func:`tag_distributions` gives."""
    plt = pyplot()
    used = [t for t in TAGS if any(s["counts"].get(t, 0) for s in sources)]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.45 * len(sources)))
    for i, src in enumerate(sources):
        left = 0.0
        for t in used:
            w = src["counts"].get(t, 0) / max(1, src["chains"])
            if w:
                ax.barh(i, w, left=left, height=0.6, color=TAG_COLOURS[t], edgecolor="white", linewidth=1,
                        label=t if i == 0 or not any(x["counts"].get(t, 0) for x in sources[:i]) else None)
                left += w
    ax.set_yticks(range(len(sources)), [f"{s['name']} ({s['chains']})" for s in sources], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("steps per chain, by tag")
    ax.legend(fontsize=7, ncol=min(5, max(1, len(used))), loc="lower center", frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ tables
POINT_COLUMNS = ("n", "mean_reward", "tag_validity", "mean_r_tag", "valid_answer_rate", "mean_completion_tokens",
                 "changed_outputs", "changed_answers")


def point_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The point-metric columns of a comparison: the task's primary metric, then the :data:`POINT_COLUMNS` any
    row has."""
    primary = [get_task(rows[0]["task"]).primary_metric[0]] if rows else []
    return primary + [c for c in POINT_COLUMNS if any(c in r for r in rows)]


def cell(value: Any) -> str:
    """A table cell: text and integers as they are, other numbers to 4 decimals, nothing for None."""
    return "" if value is None else str(value) if isinstance(value, (str, int)) else f"{value:.4f}"


def write_markdown_table(path: str | Path, rows: list[dict[str, Any]], title: str, stats: Any = None) -> None:
    """``comparison.md``: ``## title``, the intervals of the primary metric against the reference row (``stats``,
    a ``tagpr.stats.Comparison``), then every row's point metrics and costs."""
    cols = ["method"] + point_columns(rows)
    lines = [f"## {title}", ""]
    if stats is not None:
        from tagpr.stats import comparison_markdown

        primary = get_task(rows[0]["task"]).primary_metric[0] if rows else None
        lines += [comparison_markdown(stats, primary).rstrip("\n"), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r.get(c)) for c in cols) + " |")
    Path(path).write_text("\n".join(lines) + "\n")


def interval_table(comp: Any) -> dict[str, Any]:
    """The comparison's intervals for the HTML page: the primary metric and the mean reward of every row."""
    from tagpr.stats import REWARD, caption, metric_cells

    pct = f"{100 * comp.confidence:g}%"
    with_reward = REWARD != comp.metric and comp.rows and REWARD in comp.rows[0].metrics
    metrics = [comp.metric] + ([REWARD] if with_reward else [])
    header = ["method"] + [h for m in metrics
                           for h in (f"{m} [{pct} CI]", f"Δ vs {comp.reference} [{pct} CI]", "sig.")]
    rows = []
    for r in comp.rows:
        cells = []
        for m in metrics:
            value, diff, sig = metric_cells(comp, r, m)
            sig_cls = {"* better": "better", "* worse": "worse"}.get(sig, "")
            cells += [{"text": value, "cls": ""}, {"text": diff, "cls": ""}, {"text": sig, "cls": sig_cls}]
        rows.append({"method": r.method, "reference": r.method == comp.reference, "cells": cells})
    return {"header": header, "rows": rows, "caption": caption(comp)}


# ------------------------------------------------------------------------------------------ the report
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a finished ``tagpr run`` directory (its ``comparison.json``), else ValueError."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"{run}: no such directory")
    if not (run / "comparison.json").is_file():
        raise ValueError(f"{run}: not a tagpr run directory (no comparison.json; tagpr run writes it when it finishes)")
    comp = _read_json(run / "comparison.json")
    if not isinstance(comp, dict) or not isinstance(comp.get("rows"), list) or "task" not in comp:
        raise ValueError(f"{run / 'comparison.json'}: not a tagpr run comparison (no task and rows)")
    return run


def _segments(text: str, shown: int) -> list[dict[str, Any]]:
    """A step's text split around its ``[k]`` citations (``cite``: k; ``bad``: not a shown item)."""
    parts = CITE_RE.split(text)
    out: list[dict[str, Any]] = []
    for i, p in enumerate(parts):
        if i % 2 == 0:
            if p:
                out.append({"text": p})
        else:
            k = int(p)
            out.append({"text": f"[{k}]", "cite": k, "bad": not 1 <= k <= shown})
    return out


def is_correct(rec: dict[str, Any], task: LaMPTask | str) -> bool | None:
    """Whether an evaluation record's answer is right (full task reward); None for free text (ROUGE is graded)
    or without a gold."""
    reward = rec.get("reward")
    return None if not get_task(task).answers.closed or reward is None else reward >= 1.0 - 1e-9


def example_view(rec: dict[str, Any], task: LaMPTask | str) -> dict[str, Any]:
    """One held-out example for the browser: the shown items (cited ones marked), the input, the tagged chain's
    steps with their citations, and its validity as the evaluation recorded it (``tag_valid``, ``tag_errors``)."""
    from tagpr.prompts import shown_items

    items, task_input = shown_items(rec.get("prompt"))
    output = rec.get("output")
    output = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    tagged = "tag_valid" in rec
    shown = rec.get("num_items") if isinstance(rec.get("num_items"), int) else len(items)
    steps, cited = [], set()
    if tagged:
        for st in parse_chain(output).steps:
            cited.update(st.citations)
            steps.append({"tag": st.tag, "segments": _segments(st.text, shown)})
    reward = rec.get("reward")
    correct = is_correct(rec, task)
    prompt = rec.get("prompt")
    return {
        "id": str(rec.get("id")), "gold": cell(rec.get("gold")),
        "answer": "" if rec.get("answer") is None else str(rec["answer"]),
        "valid_answer": bool(rec.get("valid_answer", True)), "reward": cell(reward), "correct": correct,
        "tagged": tagged, "tag_valid": bool(rec.get("tag_valid", True)),
        "tag_errors": [str(e) for e in rec.get("tag_errors") or []],
        "items": [{"k": k, "text": t, "cited": k in cited} for k, t in enumerate(items, 1)],
        "cited": sorted(cited), "input": task_input, "steps": steps, "output": output,
        "prompt": prompt if isinstance(prompt, str) and not items else None, "open": False,
    }


def tag_distributions(run: Path, methods: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Tag counts of the training chains (``chains.jsonl``) and of each evaluated TagPR model's outputs."""
    sources = []
    if (run / "chains.jsonl").is_file():
        from tagpr.pipeline.chains import chain_stats

        st = chain_stats(run / "chains.jsonl")
        sources.append({"name": "training chains", "chains": st["chains"], "counts": st["tag_frequency"]})
    for name, recs in methods.items():
        if recs and all("tag_valid" in r for r in recs):
            counts: Counter = Counter()
            for r in recs:
                counts.update(s.tag for s in parse_chain(r.get("output")).steps)
            sources.append({"name": name, "chains": len(recs), "counts": {t: counts.get(t, 0) for t in TAGS},
                            "invalid": sum(not r.get("tag_valid") for r in recs)})
    return sources


def _moved(change: dict[str, Any] | None) -> str:
    """A stage's ``weight_change`` (``tagpr.training.common.weight_change``) as the report shows it."""
    rel = (change or {}).get("relative_l2")
    return "-" if rel is None else f"{rel:.2e} ({change.get('tensors_changed')} of {change.get('tensors')} tensors)"


def _rl_runs(run: Path) -> list[dict[str, Any]]:
    """Each RL directory of the run (``rl``, ``rl-<ablation>``): its reward curves and stage summaries."""
    from tagpr.training.rl import read_reward_log

    out = []
    for d in [run / "rl"] + sorted(run.glob("rl-*")):
        rows = read_reward_log(d / "rewards.csv")
        if not rows:
            continue
        summary = _read_json(d / "rl_summary.json") or {}
        stages = [s.get("stage") for s in summary.get("stages", [])] or list(dict.fromkeys(r["stage"] for r in rows))
        table = [{"stage": s.get("stage"), "steps": s.get("global_step"), "model_in": s.get("model_in"),
                  "weights": ", ".join(f"{k} {v:g}" for k, v in (s.get("weights") or {}).items()),
                  "first": ", ".join(f"{k} {v:.3f}" for k, v in (s.get("reward_first_half") or {}).items()),
                  "second": ", ".join(f"{k} {v:.3f}" for k, v in (s.get("reward_second_half") or {}).items()),
                  "moved": _moved(s.get("weight_change"))}
                 for s in summary.get("stages", [])]
        out.append({"name": d.name, "figure": figure_data_uri(rewards_figure(rows, stages)), "stages": table,
                    "steps": len(rows)})
    return out


def build_report(run_dir: str | Path, max_examples: int = DEFAULT_MAX_EXAMPLES) -> dict[str, Any]:
    """Everything the page shows, read from a finished ``tagpr run`` directory (ValueError when it is not)."""
    from tagpr.evaluation import run_records
    from tagpr.stats import Comparison, collect_run_dirs

    run = check_run_dir(run_dir)
    comp = _read_json(run / "comparison.json")
    task = get_task(comp["task"])
    rows = comp["rows"]
    ablations = comp.get("ablations") or []
    stats = Comparison.from_json(comp["statistics"]) if comp.get("statistics") else None
    ab_stats = Comparison.from_json(comp["ablation_statistics"]) if comp.get("ablation_statistics") else None

    methods: dict[str, list[dict[str, Any]]] = {}
    if (run / "eval").is_dir():
        for name, d in collect_run_dirs([run]).items():
            methods[name] = run_records(d)[1]
    browser = []
    for name, recs in methods.items():
        views = [example_view(r, task) for r in recs[:max_examples]]
        tagged = bool(recs) and all("tag_valid" in r for r in recs)
        browser.append({
            "name": name, "n": len(recs), "shown": len(views), "tagged": tagged, "examples": views,
            "correct": sum(bool(is_correct(r, task)) for r in recs) if task.answers.closed else None,
            "invalid": sum(not r.get("tag_valid", True) for r in recs) if tagged else None,
            "no_answer": sum(not r.get("valid_answer", True) for r in recs), "open": False,
        })
    final = next((b for b in reversed(browser) if b["tagged"]), browser[-1] if browser else None)
    if final is not None:
        final["open"] = True
        # open one example: an invalid chain, else a wrong answer, else the first
        first = next((v for v in final["examples"] if not v["tag_valid"]), None) \
            or next((v for v in final["examples"] if v["correct"] is False), None) \
            or next(iter(final["examples"]), None)
        if first is not None:
            first["open"] = True

    sources = tag_distributions(run, methods)
    sft = _read_json(run / "sft" / "sft_summary.json")
    figures = {"comparison": figure_data_uri(comparison_figure(rows, task.name, stats)) if rows else None,
               "loss": figure_data_uri(loss_figure(sft["loss_curve"])) if sft and sft.get("loss_curve") else None,
               "tags": figure_data_uri(tag_sources_figure(sources)) if sources else None}
    cols = point_columns(rows + ablations)
    recipe = _read_json(run / "recipe.json")
    return {
        "title": f"{task.name}: {run.resolve().name}", "task": task.name, "kind": task.kind, "run_dir": str(run),
        "eval_split": comp.get("eval_split"), "data": comp.get("data"),
        "generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "intervals": interval_table(stats) if stats else None,
        "ablation_intervals": interval_table(ab_stats) if ab_stats else None,
        "columns": cols,
        "points": [{"method": r.get("method"), "cells": [cell(r.get(c)) for c in cols]} for r in rows],
        "ablation_points": [{"method": r.get("method"), "cells": [cell(r.get(c)) for c in cols]} for r in ablations],
        "seconds": comp.get("seconds") or {}, "peak_rss_gb": comp.get("peak_rss_gb") or {},
        "figures": figures, "rl": _rl_runs(run),
        "sft": {"steps": sft.get("global_step"), "examples": sft.get("examples"), "loss": cell(sft.get("train_loss")),
                "model": sft.get("model"), "moved": _moved(sft.get("weight_change"))} if sft else None,
        "tags": [{"name": t, "colour": TAG_COLOURS[t], "what": TAGS[t]} for t in TAGS],
        "tag_sources": [{**s, "cells": [f"{s['counts'].get(t, 0)} ({s['counts'].get(t, 0) / max(1, s['chains']):.2f})"
                                        for t in TAGS]} for s in sources],
        "browser": browser, "max_examples": max_examples,
        "recipe": json.dumps(recipe, indent=2, ensure_ascii=False) if recipe is not None else None,
    }


def render_report(context: dict[str, Any]) -> str:
    """The page's HTML (``templates/report.html.j2``; jinja2 escapes every value)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


def write_report(run_dir: str | Path, out: str | Path | None = None, max_examples: int = DEFAULT_MAX_EXAMPLES) -> Path:
    """Write the report of a finished ``tagpr run`` directory (default ``RUN_DIR/report.html``); returns its path."""
    context = build_report(run_dir, max_examples)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(context), encoding="utf-8")
    return path
