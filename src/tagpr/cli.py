"""The ``tagpr`` command line."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # recent typer vendors click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - typer on click
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from tagpr.console import table_console
from tagpr.generation import LOCAL_BATCH  # light: the backends load on use

# what a user can get wrong (settings, paths, data, names, a download): one line and exit code 2 from every
# command, never a traceback (``--verbose`` shows it).  Commands and the API they call raise these; the one
# handler (_Typer.command) reports them.  pydantic's ValidationError, LaMPDataError, RetrievalError and
# the run-mismatch errors are ValueErrors; missing, unreadable or existing files are OSErrors.  A failed download
# (tagpr.data.download.DownloadError) too: checked only once something was raised, so that every command's start-up
# does not import the HTTP client.
USER_ERRORS = (ValueError, KeyError, OSError)


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, USER_ERRORS):
        return True
    from tagpr.data.download import DownloadError

    return isinstance(error, DownloadError)


def _reporting_user_errors(fn):
    """``fn`` reporting :data:`USER_ERRORS` through :func:`_fail`: the CLI's one error handler."""

    @functools.wraps(fn)  # typer reads the parameters through __wrapped__
    def run(*a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:
            if _STATE["verbose"] or not _is_user_error(e):
                raise
            _fail(e)

    return run


class _Group(TyperGroup):
    """The top-level command: a usage error (a missing or malformed option, an unknown command) is one line and
    exit code 2 as well, through :func:`_fail`, not click's usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:  # a group without a command: its help
            e.show()
            sys.exit(e.exit_code)
        except UsageError as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            try:
                _fail(f"{e.format_message()}{where}", e.exit_code)
            except typer.Exit as done:
                sys.exit(done.exit_code)
        except ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except typer.Abort:
            console.print("Aborted.")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class _Typer(typer.Typer):
    """A Typer whose commands report :data:`USER_ERRORS` through :func:`_fail`."""

    def command(self, *args, **kwargs):  # type: ignore[override]
        register = super().command(*args, **kwargs)

        def wrap(fn):
            register(_reporting_user_errors(fn))
            return fn

        return wrap


app = _Typer(cls=_Group, no_args_is_help=True, add_completion=False, help="Personalization reasoning on LaMP.")
data_app = _Typer(no_args_is_help=True, help="LaMP data: synthesize, validate, download.")
models_app = _Typer(no_args_is_help=True, help="Embedded default models.")
app.add_typer(data_app, name="data")
train_app = _Typer(no_args_is_help=True, help="Training: SFT on tagged chains, PRMU, multi-stage RL.")
prmu_app = _Typer(no_args_is_help=True, help="Score responses with a trained PRMU.")
tags_app = _Typer(no_args_is_help=True, help="TagPR's tagged-reasoning grammar.")
app.add_typer(models_app, name="models")
app.add_typer(tags_app, name="tags")
app.add_typer(train_app, name="train")
app.add_typer(prmu_app, name="prmu")
chains_app = _Typer(no_args_is_help=True, help="TagPR's chain pipeline: build and inspect tagged chains.")
app.add_typer(chains_app, name="chains")

console = Console(stderr=True)


_STATE: dict[str, bool] = {"verbose": False}


def _fail(msg: str | BaseException, code: int = 2) -> None:
    """A user error: one line on stderr, exit code ``code``."""
    console.print(f"[bold red]error:[/] {_one_line(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _one_line(error: str | BaseException) -> str:
    """An error as one line (a pydantic ValidationError: ``field: message`` for each error, without its help URL)."""
    from pydantic import ValidationError

    from tagpr.recipes import validation_message

    if isinstance(error, ValidationError) and error.errors():
        return validation_message(error)
    text = str(error).strip()
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return " ".join(text.split())


@app.callback()
@_reporting_user_errors
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
          include_path: Optional[list[Path]] = typer.Option(
              None, "--include-path", help="A directory of your own task records (*.yaml, searched recursively) or "
                                           "one record file; repeat for several (see docs/tasks.md). TAGPR_TASKS "
                                           "names directories too.")) -> None:
    _STATE["verbose"] = verbose
    from tagpr.cpu import keep_freed_memory

    keep_freed_memory()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if include_path:
        from tagpr.tasks import include_path as include

        include(*include_path)


@train_app.callback()
def _train() -> None:
    """Training: SFT on tagged chains, PRMU, multi-stage RL."""
    if not _STATE["verbose"]:  # the Trainer's step bar, not the libraries' weight-loading bars and deprecations
        from tagpr.console import quiet_libraries

        quiet_libraries()


@app.command("tasks")
def tasks_cmd() -> None:
    """List the tasks (the built-in LaMP ones and those from --include-path / TAGPR_TASKS) and their definitions."""
    from rich.table import Table

    from tagpr.tasks import BUILTIN_DIR, SOURCES, TASKS

    table = Table(title="tasks")
    for col in ("task", "official id", "what", "kind", "profile fields", "metrics"):
        table.add_column(col)
    for t in TASKS.values():
        table.add_row(t.name, t.official_id, t.title, t.kind, ", ".join(t.profile_fields), ", ".join(t.answers.metric_names))
    out = table_console()
    out.print(table)
    for name, src in SOURCES.items():  # users' own tasks: where each record came from
        if Path(src).parent != BUILTIN_DIR:
            out.print(f"{name}: {src}", markup=False, highlight=False, soft_wrap=True)


@app.command("score")
def score_cmd(
    task: str = typer.Option(..., help="LaMP task, e.g. LaMP-7"),
    predictions: Path = typer.Option(..., help="Predictions JSON in the official golds shape (or a bare list)."),
    golds: Path = typer.Option(..., help="Official outputs JSON."),
) -> None:
    """Score predictions with the official LaMP metrics; prints JSON on stdout."""
    from tagpr.data.loading import load_golds
    from tagpr.tasks import get_task

    t = get_task(task)
    g = load_golds(golds, t)
    p = load_golds(predictions, t)
    missing = [k for k in g if k not in p]
    if missing:
        raise ValueError(f"{predictions}: no prediction for {len(missing)} gold id(s), e.g. id={missing[0]!r}")
    extra = [k for k in p if k not in g]
    if extra:
        raise ValueError(f"{predictions}: {len(extra)} prediction id(s) have no gold, e.g. id={extra[0]!r}")
    ids = list(g)
    metrics = t.metrics([p[i] for i in ids], [g[i] for i in ids])
    print(json.dumps({"task": t.name, "n": len(ids), **metrics}, indent=2))


@app.command("eval")
def eval_cmd(
    task: str = typer.Option(..., help="LaMP task, e.g. LaMP-7"),
    data: Path = typer.Option(..., help="Directory with {split}_questions.json / {split}_outputs.json."),
    split: Optional[str] = typer.Option(None, help="Split evaluated [default: dev]."),
    method: Optional[str] = typer.Option(None, help="zero-shot | rag | rrp | tagpr, a floor: copy-input | majority | "
                                                    "user-majority, or a registered method [default: rag]"),
    retriever: Optional[str] = typer.Option(None, help="bm25 | dense[:MODEL] | recency | random [default: bm25]"),
    k: Optional[int] = typer.Option(None, help="Profile items to retrieve [default: 4]."),
    limit: Optional[int] = typer.Option(None, help="Evaluate the first N examples only."),
    out: Path = typer.Option(..., help="Run directory (resumed when it exists)."),
    model: Optional[str] = typer.Option(None, help="HF id or local path; default: embedded SmolLM2-135M."),
    backend: Optional[str] = typer.Option(None, help="auto (openvino, else ct2, on a CPU when installed; else "
                                                     "transformers) | openvino | ct2 | transformers | openai "
                                                     "[default: auto]"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server URL (openai backend)."),
    batch_size: Optional[int] = typer.Option(None, help=f"Prompts per generate call (default: {', '.join(f'{k} {v}' for k, v in LOCAL_BATCH.items())})."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Default by method and task: tagpr 448, else the task's answer.max_new_tokens (labels 16, ratings 8, text 64)."),
    max_prompt_tokens: Optional[int] = typer.Option(None, help="Prompt budget (the official LaMP one) [default: 512]."),
    temperature: Optional[float] = typer.Option(None, help="0 = greedy [default: 0.0]."),
    seed: Optional[int] = typer.Option(None),
    candidates: Optional[int] = typer.Option(None, help="RRP: sampled candidates per example (needs --temperature > 0)."),
    aggregate: Optional[str] = typer.Option(None, help="RRP: auto | vote | median | mbr | reconcile."),
    budgets: Optional[str] = typer.Option(None, help="RRP: tokens per section task,profile,response,answer."),
    intervene: Optional[bool] = typer.Option(None, "--intervene/--no-intervene",
                                             help="RRP: intervene when the model strays from the template [default: on]."),
    think: Optional[bool] = typer.Option(None, "--think/--no-think", help="RRP: the model reasons inside <think>...</think>."),
    chunk_tokens: Optional[int] = typer.Option(None, help="RRP: tokens per generation step between checks [default: 32]."),
    overwrite: bool = typer.Option(False, help="Discard an existing run in --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate a method on a LaMP split: zero-shot, retrieval-augmented, RRP, a TagPR model, or a floor by rule
    (resumable). Defaults are tagpr.evaluation.EvalConfig's."""
    if not _STATE["verbose"]:  # our own progress bar, not the libraries' (weight loading, deprecations)
        from tagpr.console import quiet_libraries

        quiet_libraries()

    from tagpr.evaluation import EvalConfig, evaluate, metrics_table
    from tagpr.recipes import load_settings

    # options not given are None: EvalConfig's defaults apply
    cfg = load_settings(EvalConfig, None, "eval", dict(
        task=task, data=str(data), split=split, method=method, retriever=retriever, k=k, limit=limit, model=model,
        backend=backend, base_url=base_url, batch_size=batch_size, max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens, temperature=temperature, seed=seed, candidates=candidates,
        aggregate=aggregate, budgets=budgets, intervene=intervene, think=think, chunk_tokens=chunk_tokens))
    result = evaluate(out, cfg, overwrite=overwrite, progress=progress)
    table_console().print(metrics_table([result], title=f"{cfg.task} {cfg.split} ({out})"))


@data_app.command("synth")
def synth_cmd(
    task: str = typer.Option(..., help="LaMP-2 | LaMP-3 | LaMP-7"),
    out: Path = typer.Option(..., help="Output root; files go to OUT/LaMP_N/."),
    train_users: int = typer.Option(200),
    dev_users: int = typer.Option(100),
    seed: int = typer.Option(0),
    noise: float = typer.Option(0.1, help="LaMP-2: probability a user picks against their preference."),
) -> None:
    """Write seeded synthetic LaMP-format data and print how profile-aware vs blind rules score on it."""
    from tagpr.data.loading import write_examples
    from tagpr.data.synthetic import generate_splits, rule_report
    from tagpr.evaluation import metrics_table
    from tagpr.tasks import get_task

    t = get_task(task)
    splits = generate_splits(t.name, train_users, dev_users, seed=seed, noise=noise)
    d = out / t.name.replace("-", "_")
    for split, exs in splits.items():
        write_examples(exs, d, t, split)
    console.print(f"wrote {d}/{{train,dev}}_{{questions,outputs}}.json")
    table_console().print(metrics_table(rule_report(t.name, splits["dev"]), title=f"reference rules on synthetic {t.name} dev"))


@data_app.command("validate")
def validate_cmd(
    task: str = typer.Option(...),
    data: Path = typer.Option(...),
    split: str = typer.Option("dev"),
) -> None:
    """Check a split's files; prints a summary or one clear error."""
    from tagpr.data.loading import load_split

    exs = load_split(data, task, split)
    sizes = [len(e.profile) for e in exs]
    print(json.dumps({"examples": len(exs), "with_golds": sum(e.gold is not None for e in exs),
                      "profile_items_mean": sum(sizes) / len(sizes), "profile_items_max": max(sizes),
                      "dated_items": any("date" in p for e in exs for p in e.profile)}, indent=2))


@data_app.command("download")
def download_cmd(
    task: str = typer.Option(...),
    split: str = typer.Option("dev"),
    out: Path = typer.Option(Path("data/lamp")),
    time_based: bool = typer.Option(False, "--time-based", help="The time-based split (adds dates)."),
    base_url: str = typer.Option("https://ciir.cs.umass.edu/downloads/LaMP"),
) -> None:
    """Fetch an official LaMP split (checked, resumable)."""
    from tagpr.data.download import download_split

    paths = download_split(task, split, out, time_based=time_based, base_url=base_url)
    for kind, p in paths.items():
        console.print(f"{kind}: {p}")


@data_app.command("loo")
def loo_cmd(
    task: str = typer.Option(..., help="LaMP task, e.g. LaMP-3 (not LaMP-1: its items carry no citations)."),
    data: Path = typer.Option(..., help="Directory with {split}_questions.json (golds not needed)."),
    split: str = typer.Option("dev", help="The split whose users' histories are used."),
    out: Path = typer.Option(..., help="Output root; files go to OUT/LaMP_N/{out-split}_{questions,outputs}.json."),
    per_user: int = typer.Option(1, help="Held-out questions per user (all usable items when fewer)."),
    seed: int = typer.Option(0),
    min_profile: int = typer.Option(4, help="Profile items a question must keep."),
    input_style: str = typer.Option("neutral", help="LaMP-7: neutral (style-stripped tweet) | copy (the tweet itself)."),
    quoted: float = typer.Option(0.0, help="LaMP-7: share of neutral inputs given as quotations, as some of LaMP's "
                                           "paraphrases are (\"...\" - @name)."),
    out_split: str = typer.Option("train", help="Split name of the written files."),
    overwrite: bool = typer.Option(False, help="Replace existing output files."),
) -> None:
    """Leave-one-out questions from users' histories alone: one held-out profile item -> official question + gold."""
    from tagpr.data.loading import load_split
    from tagpr.data.loo import build_loo, check_buildable, group_users, write_loo

    t = check_buildable(task)
    exs = load_split(data, t, split)
    loo = build_loo(exs, t, per_user=per_user, seed=seed, min_profile=min_profile, input_style=input_style,
                     quoted=quoted)
    q, o = write_loo(loo, out, t, out_split, overwrite=overwrite)
    print(json.dumps({"task": t.name, "users": len(group_users(exs)), "users_with_questions": len({e.user_id for e in loo}),
                      "questions": len(loo), "profile_items_mean": sum(len(e.profile) for e in loo) / len(loo),
                      "questions_file": str(q), "outputs_file": str(o)}, indent=2))


@models_app.command("prepare")
def prepare_cmd(force: bool = typer.Option(False, help="Convert again even if cached.")) -> None:
    """Convert the embedded GGUF model to safetensors in the cache (done automatically on first use)."""
    from tagpr.embedded import encoder_path, ensure_embedded_lm

    path = ensure_embedded_lm(force=force)
    console.print(f"language model: {path}\nsentence encoder: {encoder_path()}")


@app.command("quickstart")
def quickstart_cmd(
    out: Path = typer.Option(Path("runs/quickstart"), help="Where data and runs go."),
    n: int = typer.Option(40, help="Dev examples per task."),
    tasks: str = typer.Option("LaMP-2,LaMP-3,LaMP-7", help="Comma-separated synthetic tasks."),
    model: Optional[str] = typer.Option(None, help="Default: embedded SmolLM2-135M-Instruct."),
    backend: str = typer.Option("auto", help="auto | openvino | ct2 | transformers | openai"),
    k: int = typer.Option(4),
    overwrite: bool = typer.Option(False),
) -> None:
    """Synthetic users -> zero-shot vs RAG with the embedded model -> comparison table."""
    from tagpr.quickstart import run_quickstart

    run_quickstart(out, n=n, tasks=[x.strip() for x in tasks.split(",") if x.strip()], model=model, k=k,
                   overwrite=overwrite, backend=backend)


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Evaluation run directories (tagpr eval --out); a tagpr run directory "
                                                "stands for its eval/ runs."),
    reference: Optional[str] = typer.Option(None, help="The row differences are against: a run directory's name or "
                                                        "path (default: the first run)."),
    metric: Optional[str] = typer.Option(None, help="Metric shown (default: the task's primary one: accuracy, mae, "
                                                    "rouge-1); f1, rmse, rouge-L, mean_reward also work."),
    resamples: int = typer.Option(2000, help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Seed of the resamples."),
    confidence: float = typer.Option(0.95, help="Interval level."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write every metric's intervals to this JSON file."),
    unit: str = typer.Option("auto", help="What is resampled: users (intervals for new users), examples (new questions "
                                          "of these users), auto = users when the runs carry user ids."),
) -> None:
    """Paired bootstrap over users: each run's metric with its interval, and its difference to a reference run
    with an interval and whether that excludes 0 (see docs/statistics.md)."""
    from tagpr.stats import collect_run_dirs, compare_run_dirs, comparison_table, resolve_reference

    dirs = collect_run_dirs(runs)
    ref = resolve_reference(dirs, reference)
    comp = compare_run_dirs(dirs, ref, resamples=resamples, seed=seed, confidence=confidence, unit=unit)
    table = comparison_table(comp, metric)
    if json_out is not None:
        json_out.write_text(json.dumps(comp.to_json(), indent=2))
    table_console().print(table)


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A finished tagpr run directory (tagpr run --out)."),
    out: Optional[Path] = typer.Option(None, help="Directory of the page, report.html (default: RUN_DIR)."),
    max_examples: int = typer.Option(200, min=1, help="Held-out examples per method in the example browser."),
) -> None:
    """One self-contained HTML page of a run: the comparison with its intervals, reward curves per RL stage, tag
    distributions, and a browser of held-out examples (the profile items each chain cites next to the tagged
    chain, invalid chains flagged). Open it in any browser; it loads nothing."""
    from tagpr.reports import write_report

    path = write_report(run_dir, out / "report.html" if out is not None else None, max_examples=max_examples)
    console.print(f"wrote {path}", highlight=False)


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="YAML recipe, e.g. recipes/quickstart.yaml."),
    out: Optional[Path] = typer.Option(None, help="Run directory (resumed when it exists); default runs/<recipe name>."),
    ablation: Optional[list[str]] = typer.Option(None, help="Also run an ablation: no-tag-reward | no-prmu | "
                                                           "no-exploratory | no-sft | all (repeat for several)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe value, e.g. --set sft.max_steps=2 "
                                                                 "(repeat for several)."),
    progress: bool = typer.Option(False, help="The libraries' own progress bars and per-step logs (default: one "
                                              "line per stage)."),
    overwrite: bool = typer.Option(False, help="Discard the run in --out (a tagpr run directory) and start again."),
) -> None:
    """TagPR end to end: chains -> SFT -> PRMU -> guided RL -> exploratory RL -> evaluation of every stage and the
    baselines, one comparison table (Markdown, JSON) and a plot. Resumable."""
    import yaml

    if not (progress or _STATE["verbose"]):
        from tagpr.console import quiet_libraries

        quiet_libraries()

    from tagpr.end_to_end import ABLATIONS, run_recipe
    from tagpr.evaluation import metrics_table

    overrides: dict[str, dict] = {}
    for item in set_ or []:
        key, eq, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not eq or not dot or not section or not name:
            raise ValueError(f"--set takes SECTION.KEY=VALUE, got {item!r}")
        overrides.setdefault(section, {})[name] = yaml.safe_load(value)
    chosen = list(ABLATIONS) if ablation and "all" in ablation else list(ablation or [])
    out = out or Path("runs") / recipe.stem
    result = run_recipe(recipe, out, ablations=chosen, overrides=overrides, progress=progress, console=console,
                        overwrite=overwrite)
    from tagpr.stats import Comparison, comparison_table

    tables = table_console(stderr=True)
    tables.print(metrics_table(result["rows"], title=f"{result['task']}: baselines and every TagPR stage"))
    tables.print(comparison_table(Comparison.from_json(result["statistics"])))
    if result.get("ablations"):
        tables.print(metrics_table(result["ablations"], title=f"{result['task']}: ablations"))
        tables.print(comparison_table(Comparison.from_json(result["ablation_statistics"])))
    console.print(f"[dim]{out}/comparison.md, comparison.json, comparison.png; "
                  f"{result['seconds']['total_this_call']:.0f}s; an HTML page of it all: tagpr report {out}[/]")


@app.command("plan")
def plan_cmd(
    recipe: Path = typer.Argument(..., help="YAML recipe with an rl: or sft: section, e.g. recipes/rl_qwen7b_lora.yaml."),
    gpus: Optional[int] = typer.Option(None, help="Training GPUs (processes); default: the accelerate config's "
                                                  "num_processes, else 1. A vLLM server's GPUs come on top."),
    gpu_memory: float = typer.Option(80.0, help="Memory of one GPU, GB (10^9 bytes)."),
    model: Optional[str] = typer.Option(None, help="Model id or directory (replaces the recipe's); only its "
                                                   "config.json is read."),
    accelerate_config: Optional[Path] = typer.Option(None, help="accelerate config (sharding, processes); default: "
                                                                "the one the recipe's launch line names."),
    prompt_tokens: Optional[int] = typer.Option(None, help="Prompt tokens per completion (RL); default: the TagPR "
                                                           "prompt at its caps."),
    section: Optional[str] = typer.Option(None, help="rl | sft, for a recipe with both (default: rl)."),
) -> None:
    """Check a training recipe for GPUs without a GPU, offline: parameter count from the model's config, memory per
    GPU (weights, gradients, optimizer state, activations, vLLM), tokens per step; refuses what does not fit."""
    from tagpr.plan import check, make_plan, plan_table

    plan = make_plan(recipe, gpus=gpus, gpu_memory=gpu_memory, model=model, accelerate_config=accelerate_config,
                     prompt_tokens=prompt_tokens, section=section)
    out = table_console()
    out.print(plan_table(plan))
    for note in plan.notes:
        out.print(f"- {note}", highlight=False, markup=False)
    check(plan)


@train_app.command("prmu")
def train_prmu_cmd(
    config: Optional[Path] = typer.Option(None, help="YAML recipe (its prmu: section); options override it."),
    task: Optional[str] = typer.Option(None),
    data: Optional[Path] = typer.Option(None, help="LaMP data directory."),
    split: Optional[str] = typer.Option(None, help="Split whose users are divided 70/15/15 into train/val/test "
                                                   "[default: train]."),
    out: Optional[Path] = typer.Option(None, help="Output directory (model.safetensors, config.json, metrics.json)."),
    blind_outputs: Optional[Path] = typer.Option(None, help="Profile-blind outputs: predictions.json or a zero-shot eval run dir."),
    policy_samples: Optional[Path] = typer.Option(None, help="JSONL {id, response, reward} of policy samples."),
    encoder: Optional[str] = typer.Option(None, help="sentence-transformers id/path; default the packaged MiniLM."),
    limit: Optional[int] = typer.Option(None),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (early stopping on validation users)."),
    user_dropout: Optional[float] = typer.Option(None, help="Share of training pairs scored with the user zeroed."),
    seed: Optional[int] = typer.Option(None),
) -> None:
    """Train PRMU (Bradley-Terry) and report held-out pairwise accuracy with and without the user."""
    from tagpr.prmu.train import PRMURecipe, train_prmu_recipe
    from tagpr.recipes import load_settings

    recipe = load_settings(PRMURecipe, config, "prmu", _paths(
        task=task, data=data, split=split, out=out, blind_outputs=blind_outputs, policy_samples=policy_samples,
        encoder=encoder, limit=limit, epochs=epochs, user_dropout=user_dropout, seed=seed))
    m = train_prmu_recipe(recipe)
    from rich.table import Table

    table = Table(title=f"PRMU {m['task']}: held-out users' pairwise accuracy ({recipe.out}/metrics.json)")
    for col in ("negatives", "test pairs", "with user", "user zeroed", "gap"):
        table.add_column(col, justify="left" if col == "negatives" else "right")
    for kind in [k for k in m["test"] if k != "all"] + ["all"]:
        n = sum(m["pairs"]["test"].values()) if kind == "all" else m["pairs"]["test"][kind]
        table.add_row(kind, str(n), f"{m['test'][kind]:.4f}", f"{m['test_zeroed_user'][kind]:.4f}", f"{m['gap'][kind]:+.4f}")
    table_console().print(table)


@train_app.command("sft")
def train_sft_cmd(
    config: Optional[Path] = typer.Option(None, help="YAML recipe (e.g. recipes/sft_quick.yaml); options override it."),
    chains: Optional[list[Path]] = typer.Option(None, help="chains.jsonl (repeat for several)."),
    out: Optional[Path] = typer.Option(None, help="Output directory (checkpoints, final model, README.md)."),
    model: Optional[str] = typer.Option(None, help="Base model; default: embedded SmolLM2-135M-Instruct."),
    lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA adapters (merged at the end) or full fine-tuning."),
    freeze_layers: Optional[int] = typer.Option(None, help="Freeze the embeddings and the lowest N decoder layers."),
    max_steps: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    grad_accum: Optional[int] = typer.Option(None),
    learning_rate: Optional[float] = typer.Option(None),
    max_length: Optional[int] = typer.Option(None),
    save_steps: Optional[int] = typer.Option(None),
    limit: Optional[int] = typer.Option(None, help="Use the first N chains."),
    seed: Optional[int] = typer.Option(None),
    overwrite: bool = typer.Option(False, help="Discard the run in --out (by default a killed run resumes from its "
                                               "last checkpoint)."),
) -> None:
    """Supervised fine-tuning on tagged chains (TRL SFTTrainer, loss on the assistant turn)."""

    from tagpr.training.sft import train_sft

    summary = train_sft(config, overwrite=overwrite, **_paths(
        chains=chains or None, out=out, model=model, lora=lora, freeze_layers=freeze_layers, max_steps=max_steps,
        batch_size=batch_size, grad_accum=grad_accum, learning_rate=learning_rate, max_length=max_length,
        save_steps=save_steps, limit=limit, seed=seed))
    recipe_out = out or summary.get("recipe", {}).get("out")
    from tagpr.training.common import is_main_process

    if not is_main_process():  # under accelerate launch: one report
        return
    console.print(f"saved {recipe_out}: {summary['global_step']} steps, final train loss {summary['train_loss']:.4f} "
                  f"(model card {recipe_out}/README.md)")


@train_app.command("rl")
def train_rl_cmd(
    config: Optional[Path] = typer.Option(None, help="YAML recipe with an rl: section (e.g. recipes/rl_quick.yaml)."),
    task: Optional[str] = typer.Option(None),
    data: Optional[Path] = typer.Option(None, help="Directory with {split}_questions.json / {split}_outputs.json."),
    split: Optional[str] = typer.Option(None),
    offset: Optional[int] = typer.Option(None, help="Skip the first N examples (keep held-out ones out of RL)."),
    limit: Optional[int] = typer.Option(None),
    out: Optional[Path] = typer.Option(None, help="Run directory: one sub-directory per stage."),
    model: Optional[str] = typer.Option(None, help="Start model (the SFT checkpoint); default: embedded SmolLM2."),
    prmu: Optional[Path] = typer.Option(None, help="PRMU directory (tagpr train prmu) for the PRMU reward."),
    guide_chains: Optional[Path] = typer.Option(None, help="Teacher chains of the RL examples (tagpr chains build), "
                                                           "for stages with guide > 0."),
    stages: Optional[str] = typer.Option(None, help="Run only these stages of the recipe, e.g. 'guided'."),
    no_tag_reward: bool = typer.Option(False, help="Ablation: tag reward weight 0 in every stage."),
    no_prmu: bool = typer.Option(False, help="Ablation: PRMU reward off."),
    loss_type: Optional[str] = typer.Option(None, help="grpo | dapo | dr_grpo | bnpo | cispo | sapo"),
    max_steps: Optional[int] = typer.Option(None, help="Steps per stage (stages may set their own)."),
    batch_size: Optional[int] = typer.Option(None),
    num_generations: Optional[int] = typer.Option(None),
    learning_rate: Optional[float] = typer.Option(None),
    beta: Optional[float] = typer.Option(None, help="KL coefficient."),
    max_completion_length: Optional[int] = typer.Option(None),
    lora: Optional[bool] = typer.Option(None, "--lora/--full"),
    freeze_layers: Optional[int] = typer.Option(None, help="Freeze the embeddings and the lowest N decoder layers."),
    rollout_engine: Optional[str] = typer.Option(None, help="auto | ct2 (CTranslate2 rollouts, CPU) | openvino (OpenVINO "
                                                            "GenAI rollouts, CPU) | trainer (TRL's generate / vLLM)."),
    use_vllm: Optional[bool] = typer.Option(None, "--vllm/--no-vllm", help="Generate with vLLM (GPU)."),
    vllm_mode: Optional[str] = typer.Option(None, help="colocate | server"),
    seed: Optional[int] = typer.Option(None),
    overwrite: bool = typer.Option(False, help="Discard the run in --out (by default a killed run resumes: finished "
                                               "stages are kept, the current one goes on from its checkpoint)."),
) -> None:
    """Multi-stage RL (TRL GRPOTrainer): guided (task + tag + PRMU), then exploratory (task only)."""

    from tagpr.training.rl import ablate, load_rl_recipe, train_rl

    recipe = load_rl_recipe(config, _paths(
        task=task, data=data, split=split, offset=offset, limit=limit, out=out, model=model, prmu=prmu,
        guide_chains=guide_chains, loss_type=loss_type, max_steps=max_steps, batch_size=batch_size,
        num_generations=num_generations, learning_rate=learning_rate, beta=beta,
        max_completion_length=max_completion_length, lora=lora, freeze_layers=freeze_layers,
        rollout_engine=rollout_engine, use_vllm=use_vllm, vllm_mode=vllm_mode, seed=seed))
    recipe = ablate(recipe, no_tag_reward=no_tag_reward, no_prmu=no_prmu,
                    only=[s for s in stages.split(",") if s] if stages else None)
    summary = train_rl(recipe, overwrite=overwrite)
    from tagpr.training.common import is_main_process

    if not is_main_process():  # under accelerate launch: one report
        return
    for st in summary["stages"]:
        console.print(f"{st['stage']}: {st['global_step']} steps, weights {st['weights']}, mean rewards "
                      f"{st['reward_first_half']} -> {st['reward_second_half']} (first -> second half)")
    console.print(f"final model {summary['final_model']}; per-step rewards {summary['rewards_csv']}, plot {summary['plot']}")


@prmu_app.command("score")
def prmu_score_cmd(
    model: Path = typer.Option(..., help="PRMU directory."),
    task: str = typer.Option(...),
    data: Path = typer.Option(...),
    split: str = typer.Option("dev"),
    responses: Path = typer.Option(..., help='JSONL lines {"id": EXAMPLE_ID, "response": TEXT}.'),
    zero_user: bool = typer.Option(False, help="Score with the user embedding zeroed (ablation)."),
) -> None:
    """Print one PRMU score per response line (higher = fits the user better)."""
    from tagpr.data.loading import load_split
    from tagpr.prmu.reward import PRMUScorer
    from tagpr.runstate import iter_jsonl

    by_id = {e.id: e for e in load_split(data, task, split)}
    exs, texts = [], []
    for n, rec in list(iter_jsonl(responses, ("id", "response"))):  # the file's shape first, then its ids
        rid, text = str(rec["id"]), rec["response"]
        if rid not in by_id:
            raise ValueError(f"{responses}, line {n}: example id={rid!r} is not in {data} {split}")
        if not isinstance(text, str):
            raise ValueError(f"{responses}, line {n}, example id={rid!r}: field 'response' must be a string")
        exs.append(by_id[rid])
        texts.append(text)
    scorer = PRMUScorer(model, task)
    for s in scorer.score(exs, texts, zero_user=zero_user):
        print(f"{s:.6f}")


@tags_app.command("check")
def tags_check_cmd(
    file: Path = typer.Argument(..., help='JSONL lines {"text": ..., "num_items": K}.'),
    task: str = typer.Option(...),
) -> None:
    """Validate tagged chains: one JSON line per input with valid, reward, answer, errors."""
    from tagpr.tags import check_chain
    from tagpr.tasks import get_task

    from tagpr.runstate import iter_jsonl

    t = get_task(task)
    chains = []
    for n, rec in iter_jsonl(file, ("text",)):  # the whole file is checked before any output
        try:
            chains.append((rec["text"], int(rec.get("num_items", 0))))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{file}, line {n}: field 'num_items' must be an integer ({e})") from None
    for text, k in chains:
        print(json.dumps(check_chain(text, t, k).to_json(), ensure_ascii=False))


@chains_app.command("build")
def chains_build_cmd(
    task: str = typer.Option(...),
    data: Path = typer.Option(..., help="LaMP data directory (golds needed)."),
    split: Optional[str] = typer.Option(None, help="[default: train]"),
    out: Path = typer.Option(..., help="Directory: chains.jsonl, chains.examples.jsonl, chains.config.json "
                                       "(resumed when it holds a build)."),
    teacher: Optional[str] = typer.Option(None, help="analytic (a rule, no model) | model (generates with --backend) "
                                                     "[default: analytic]"),
    backend: Optional[str] = typer.Option(None, help="The model teacher's: auto | openvino | ct2 | transformers | "
                                                     "openai "
                                                     "[default: auto]"),
    style: Optional[str] = typer.Option(None, help="Analytic chains: full (9 tags) | compact (5 tags, about half the "
                                                   "tokens) [default: full]."),
    model: Optional[str] = typer.Option(None, help="Teacher model (transformers: HF id/path; openai: server's name)."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server URL."),
    samples: Optional[int] = typer.Option(None, help="Chains sampled per example [default: 4]."),
    rule: Optional[str] = typer.Option(None, help="Analytic compact chains: the rule read off the shown items "
                                       "(rating: nearest | middle; labels: nearest | most-shown | best-shown), "
                                       "each: one chain per rule, or fitted: the lowest error on the fit examples "
                                       "[default: fitted]."),
    threshold: Optional[float] = typer.Option(None, help="Task reward to accept a chain (default by task kind: 1 / 0.75 / 0.35)."),
    rationalize: Optional[bool] = typer.Option(None, "--rationalize/--no-rationalize",
                                               help="Give the gold as a hint where no sampled chain is accepted [default: on]."),
    labeller: Optional[str] = typer.Option(None, help="For untagged chains: embedding | llm | none [default: embedding]."),
    retriever: Optional[str] = typer.Option(None, help="[default: bm25]"),
    k: Optional[int] = typer.Option(None, help="[default: 4]"),
    temperature: Optional[float] = typer.Option(None, help="[default: 0.8]"),
    offset: Optional[int] = typer.Option(None, help="Skip the first N examples (e.g. those kept for evaluation)."),
    limit: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None, help="[default: 8]"),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight (openai teacher) [default: 8]."),
    seed: Optional[int] = typer.Option(None),
    overwrite: bool = typer.Option(False, help="Discard a build in --out."),
    progress: bool = typer.Option(True),
) -> None:
    """Teacher chains -> rejection sampling -> rationalization -> labelling -> validation -> JSONL (resumable).
    Defaults are tagpr.pipeline.chains.ChainsConfig's."""

    from tagpr.pipeline.chains import build_chains

    if out.suffix == ".jsonl":
        raise ValueError(f"--out {out}: a directory (chains.jsonl is written inside it)")
    stats = build_chains(out, overwrite=overwrite, progress=progress, **_paths(
        task=task, data=data, split=split, teacher=teacher, backend=backend, style=style, model=model,
        base_url=base_url, samples=samples, rule=rule, threshold=threshold, rationalize=rationalize, labeller=labeller,
        retriever=retriever, k=k, temperature=temperature, offset=offset, limit=limit, batch_size=batch_size,
        concurrency=concurrency, seed=seed))
    print(json.dumps(stats, indent=2))


@chains_app.command("stats")
def chains_stats_cmd(
    file: Path = typer.Argument(..., help="chains.jsonl"),
    plot: Optional[Path] = typer.Option(None, help="PNG of the tag distribution (default: FILE with .tags.png)."),
) -> None:
    """Acceptance rate per source, tag frequency, chain length; saves a tag-distribution plot."""
    from tagpr.pipeline.chains import chain_stats

    png = plot or file.with_name(file.stem + ".tags.png")
    stats = chain_stats(file, plot=png)
    print(json.dumps({**stats, "plot": str(png)}, indent=2))


def _paths(**options: object) -> dict[str, object]:
    """Options as settings: the ones given (None = not given: the settings' default applies), paths as strings."""
    def plain(v: object) -> object:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in options.items() if v is not None}


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover - `python -m tagpr.cli` / `accelerate launch -m tagpr.cli`
    main()
