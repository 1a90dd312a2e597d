"""``tagpr run RECIPE.yaml``: TagPR end to end, resumable.

data (synthetic users, or a LaMP directory) -> tagged chains -> SFT -> PRMU -> RL stages (guided, then
exploratory) -> evaluation of the baselines and of every stage's model on held-out examples -> one
comparison table (``comparison.md`` / ``comparison.json``) and a plot (``comparison.png``).  The table gives
paired bootstrap 95% intervals over held-out users (``tagpr.stats``) against a reference row: ``eval.reference``
in the recipe, by default ``rag`` when it is a baseline (else the first row); ablations against ``full``.

Each step writes its output under the run directory and is skipped when it finished before, so a killed
run picks up where it stopped (chains, SFT, RL and evaluation also resume inside a step).  Ablations run the
RL part again from the same chains, SFT and PRMU, each in its own directory, and add rows to
``ablations.md`` / ``ablations.json``:

- ``no-tag-reward``: the guided stage without ``R_tag``;
- ``no-prmu``: without the PRMU reward;
- ``no-exploratory``: the guided stage only (the full run's first stage: its row is reused, not retrained);
- ``no-sft``: RL from the base model instead of the SFT checkpoint.

The recipe has one section per step (``run``, ``chains``, ``sft``, ``prmu``, ``rl``, ``eval``); see
``recipes/quickstart.yaml``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tagpr.cpu import PeakRSS
from tagpr.recipes import SECTIONS, StrictModel, check_keys, read_recipe, validation_message
from tagpr.reports import plot_comparison, write_markdown_table
from tagpr.runstate import RunDir, write_atomic, write_json
from tagpr.tasks import get_task

ABLATIONS = ("no-tag-reward", "no-prmu", "no-exploratory", "no-sft")


class RunSection(StrictModel):
    task: str = "LaMP-2"
    data: str | None = None  # a LaMP directory; None = synthetic users written under the run directory
    train_split: str = "train"
    eval_split: str = "dev"
    synthetic_train_users: int = Field(120, ge=4)
    synthetic_dev_users: int = Field(24, ge=2)
    seed: int = 0
    rl_offset: int = Field(0, ge=0)  # RL prompts skip the first N training examples
    rl_limit: int | None = Field(None, ge=1)
    prmu: bool = True  # train a PRMU and use its reward in the guided stage
    baselines: list[str] = Field(default_factory=lambda: ["zero-shot", "rag", "tagpr"])  # tagpr = base model, tagged
    # what chains, SFT, PRMU and RL train on: the data's train_split (questions with golds), or leave-one-out
    # questions built from the eval split's profiles alone (``profiles``; its golds are then used for evaluation only),
    # or from the training users' profiles alone (``train-profiles``: their questions are not used; other users than
    # the evaluated ones, synthetic users included)
    train_from: Literal["split", "profiles", "train-profiles"] = "split"
    loo_per_user: int = Field(8, ge=1)  # leave-one-out questions per user (train_from: profiles)
    # leave-one-out questions per user for the users whose questions start at rl_offset (the RL prompts); None =
    # loo_per_user.  RL reads prompts, not chains, so it can take more of each history than SFT's chains do.
    rl_loo_per_user: int | None = Field(None, ge=1)
    # LaMP-7: the share of leave-one-out inputs given as quotations, as 4% of LaMP's own paraphrases are
    # ("..." - @name; tagpr.data.loo.quote_text)
    loo_quoted: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _profiles_need_data(self) -> "RunSection":
        if self.train_from == "profiles" and self.data is None:
            raise ValueError("run.train_from: profiles builds training questions from a LaMP directory's profiles; "
                             "give it with --set run.data=DIR")
        if self.rl_loo_per_user is not None and (self.train_from == "split" or self.rl_offset == 0):
            raise ValueError("run.rl_loo_per_user sets how many leave-one-out questions each RL user gives; it needs "
                             "run.train_from: profiles or train-profiles, and run.rl_offset > 0 (where the RL "
                             "users' questions start)")
        return self


class EvalSection(StrictModel):
    limit: int | None = Field(16, ge=1)
    k: int = Field(4, ge=1)
    retriever: str = "bm25"
    max_new_tokens: int = Field(384, ge=1)
    batch_size: int | None = Field(None, ge=1)  # None = the backend's default (openvino / ct2 64, transformers 16)
    # the row the comparison's bootstrap intervals are against (docs/statistics.md); None = "rag" when it is a
    # baseline, else the first row.  Ablations are always against "full".
    reference: str | None = None
    # what the intervals resample: users (auto, when the data has user ids) or examples (docs/statistics.md)
    bootstrap_unit: Literal["auto", "users", "examples"] = "auto"


class RunPaths:
    def __init__(self, out: Path):
        self.out = out
        self.data = out / "data"
        self.chains = out / "chains.jsonl"
        self.guide = out / "guide" / "chains.jsonl"  # the teacher's chains for the RL prompts (stages with guide > 0)
        self.sft = out / "sft"
        self.prmu = out / "prmu"
        self.evals = out / "eval"

    def rl(self, variant: str) -> Path:
        return self.out / ("rl" if variant == "full" else f"rl-{variant}")


def _log(console: Any, msg: str) -> None:
    if console is not None:
        console.print(msg)


def run_recipe(recipe_path: str | Path, out: str | Path, ablations: Sequence[str] = (), overrides: dict[str, dict[str, Any]] | None = None,
               progress: bool = True, console: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) the recipe at ``recipe_path`` into ``out``; returns the comparison (also written as files).

    ``overrides``: per-section values that replace the recipe's (e.g. ``{"sft": {"max_steps": 2}}``);
    ``overwrite``: discard the run directory first (only when it holds a ``tagpr run``: its ``recipe.json``)."""
    raw = read_recipe(recipe_path)
    for section, values in (overrides or {}).items():
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ValueError(f"{recipe_path}: section {section!r} must be a mapping")
        raw[section].update({k: v for k, v in values.items() if v is not None})
    check_recipe(raw, recipe_path)
    bad = sorted(set(ablations) - set(ABLATIONS))
    if bad:
        raise ValueError(f"unknown ablations {bad}; choose from {', '.join(ABLATIONS)}")
    run = RunSection.model_validate(raw.get("run", {}))
    ev = EvalSection.model_validate(raw.get("eval", {}))
    task = get_task(run.task)
    if ev.reference is not None and not ev.reference.startswith("tagpr: rl "):  # RL stage names are checked later
        _reference(ev.reference, _baseline_labels(run) + ["tagpr: sft"])
    paths = RunPaths(Path(out))
    run_dir = RunDir(paths.out, "recipe.json", ("*",), "a tagpr run",
                     owns=("data", "chains.*", "guide", "sft", "prmu", "eval", "rl", "rl-*", "final", "comparison.*",
                           "ablations.*"))
    if run.data is not None:  # the data is checked before --overwrite deletes anything
        from tagpr.data.loading import split_files

        for split in {run.eval_split, *([run.train_split] if run.train_from == "split" else [])}:
            split_files(run.data, task, split)  # LaMPDataError when the split's questions are missing
    if overwrite:
        run_dir.discard(inputs=(run.data, raw.get("sft", {}).get("model"), raw.get("rl", {}).get("model")))
    paths.out.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir.settings_path, json.dumps(raw, indent=2, default=str))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    peaks: dict[str, float] = {}  # peak RSS (GB) per stage: where the run's memory goes

    def timed(name: str, fn: Any, label: str | None = None) -> Any:
        s = time.perf_counter()
        shown = label or name
        with PeakRSS() as mem:
            if console is not None and not progress:  # one line per stage: a spinner while it runs, its time after
                with console.status(f"[bold]{shown}[/] ..."):
                    res = fn()
            else:
                _log(console, f"[bold]{shown}[/]")
                res = fn()
        took = time.perf_counter() - s
        timings[name] = timings.get(name, 0.0) + took
        peak = mem.gb
        if peak is not None:
            peaks[name] = max(peaks.get(name, 0.0), peak)
        mem_note = f"   peak {peak:4.1f} GB" if peak is not None else ""
        _log(console, f"[green]done[/] {shown:<28} {took:6.0f} s   (total {time.perf_counter() - t0:5.0f} s){mem_note}")
        return res

    data_dir, eval_dir = timed("data", lambda: _data(run, task.name, paths))
    timed("chains", lambda: _chains(raw.get("chains", {}), run, task.name, data_dir, paths, progress))
    timed("sft", lambda: _sft(raw.get("sft", {}), paths, progress))
    prmu_dir = timed("prmu", lambda: _prmu(raw.get("prmu", {}), run, task.name, data_dir, paths, progress)) if run.prmu else None

    from tagpr.training.rl import RLStage, ablate, final_model, load_rl_recipe, stage_dirs, train_rl

    # stages with off-policy guidance read the teacher's chains for the RL prompts: built like the SFT chains
    guided = any(RLStage.model_validate(st).guide for st in raw.get("rl", {}).get("stages") or [])
    if guided:
        timed("chains", lambda: _chains(raw.get("chains", {}), run, task.name, data_dir, paths, progress, rl=True),
              "chains for RL guidance")

    def rl_recipe(variant: str) -> Any:
        base = load_rl_recipe(None, {**raw.get("rl", {}), "task": task.name, "data": str(data_dir),
                                     "split": run.train_split, "offset": run.rl_offset, "limit": run.rl_limit,
                                     "out": str(paths.rl(variant)), "prmu": str(prmu_dir) if prmu_dir else None,
                                     "model": None if variant == "no-sft" else str(paths.sft),
                                     "guide_chains": str(paths.guide) if guided else None})
        # no PRMU trained (run.prmu: false) is the no-prmu ablation applied to every variant
        return ablate(base, no_tag_reward=variant == "no-tag-reward", no_prmu=prmu_dir is None or variant == "no-prmu",
                      no_exploratory=variant == "no-exploratory")

    full = rl_recipe("full")
    for warning in length_warnings(paths.chains, paths.sft, {"rl.max_completion_length": full.max_completion_length,
                                                             "eval.max_new_tokens": ev.max_new_tokens}):
        _log(console, f"[yellow]warning[/] {warning}")
    # the comparison's rows: label, eval method, model (None = the base model)
    planned: list[tuple[str, str, str | None]] = [(label, b, None) for label, b in zip(_baseline_labels(run), run.baselines)]
    planned.append(("tagpr: sft", "tagpr", str(paths.sft)))
    planned += [(f"tagpr: rl {s.name}", "tagpr", str(d)) for s, d in zip(full.stages, stage_dirs(full))]
    reference = _reference(ev.reference, [label for label, _, _ in planned])
    timed("rl", lambda: train_rl(full, progress=progress))
    _link_final(paths.out / "final", Path(final_model(full)))

    def evaluate(label: str, method: str, model: str | None) -> dict[str, Any]:
        from tagpr.evaluation import EvalConfig, EvalRun

        cfg = EvalConfig(task=task.name, data=str(eval_dir), split=run.eval_split, method=method, k=ev.k,
                         retriever=ev.retriever, model=model, batch_size=ev.batch_size, limit=ev.limit,
                         max_new_tokens=ev.max_new_tokens if method == "tagpr" else None)
        res = EvalRun(cfg, paths.evals / label).run(progress=progress)
        return {**res, "method": label}

    rows = [timed("eval", lambda p=p: evaluate(*p), f"eval {p[0]}") for p in planned]
    tagpr_rows = [i for i, (_, method, model) in enumerate(planned) if method == "tagpr" and model is not None]
    for prev, cur in zip(tagpr_rows, tagpr_rows[1:]):  # how far each RL stage moved the policy's held-out outputs
        rows[cur].update(policy_change(paths.evals / planned[prev][0], paths.evals / planned[cur][0]))
    stats = _statistics({label: paths.evals / label for label, _, _ in planned}, reference, run.seed, ev.bootstrap_unit)
    comparison = {"task": task.name, "data": str(eval_dir), "train_data": str(data_dir), "eval_split": run.eval_split, "rows": rows,
                  "statistics": stats.to_json()}
    write_markdown_table(paths.out / "comparison.md", rows, f"{task.name}: every stage and the baselines, held-out examples", stats)

    ablation_rows: list[dict[str, Any]] = []
    if ablations:
        last = rows[-1]
        ablation_rows.append({**last, "method": "full"})
        ablation_dirs = {"full": paths.evals / last["method"]}
        first_stage = f"tagpr: rl {full.stages[0].name}"
        for variant in ablations:
            if variant == "no-exploratory" and len(full.stages) > 1:
                # the guided stage alone is the full run's first stage: same chains, SFT, PRMU, seed and
                # settings, so its model and held-out outputs are already there; no second training
                guided = rows[[label for label, _, _ in planned].index(first_stage)]
                ablation_rows.append({**guided, "method": f"ablation: {variant}"})
                ablation_dirs[f"ablation: {variant}"] = paths.evals / first_stage
                _log(console, f"[green]done[/] ablation: {variant} = {first_stage} (the same model)")
                continue
            rec = rl_recipe(variant)
            timed("ablation rl", lambda r=rec: train_rl(r, progress=progress), f"rl ablation: {variant}")
            ablation_rows.append(timed("ablation eval", lambda v=variant, r=rec: evaluate(f"ablation: {v}", "tagpr",
                                                                                           final_model(r)),
                                       f"eval ablation: {variant}"))
            ablation_dirs[f"ablation: {variant}"] = paths.evals / f"ablation: {variant}"
        ablation_stats = _statistics(ablation_dirs, "full", run.seed, ev.bootstrap_unit)
        write_markdown_table(paths.out / "ablations.md", ablation_rows, f"{task.name}: ablations (final model of each)", ablation_stats)
        run_dir.write_json("ablations.json", ablation_rows)
        comparison["ablations"] = ablation_rows
        comparison["ablation_statistics"] = ablation_stats.to_json()
    comparison["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    comparison["seconds"]["total_this_call"] = round(time.perf_counter() - t0, 1)
    comparison["peak_rss_gb"] = {k: round(v, 2) for k, v in peaks.items()}
    run_dir.write_json("comparison.json", comparison)
    plot_comparison(rows, paths.out / "comparison.png", task.name, stats)
    return comparison


# ------------------------------------------------------------------------------------------ steps
DATA_SETTINGS = "data.json"  # in RUN/data: the run settings its files were built with


def _data_settings(run: RunSection, task: str) -> dict[str, Any]:
    """The run settings that decide what ``RUN/data`` holds (the users, their leave-one-out questions)."""
    data = str(Path(run.data).resolve()) if run.data is not None else None
    out: dict[str, Any] = {"task": task, "data": data, "train_from": run.train_from, "seed": run.seed,
                           "train_split": run.train_split}
    if run.data is None:
        out.update(synthetic_train_users=run.synthetic_train_users, synthetic_dev_users=run.synthetic_dev_users,
                   eval_split=run.eval_split)
    if run.train_from != "split":
        out.update(loo_per_user=run.loo_per_user, rl_loo_per_user=run.rl_loo_per_user,
                   rl_offset=run.rl_offset if run.rl_loo_per_user is not None else None)
        if run.loo_quoted:  # recorded when set, so data built before the setting existed still matches
            out["loo_quoted"] = run.loo_quoted
    return out


def _check_data_settings(run: RunSection, task: str, paths: RunPaths, ready: bool) -> None:
    """After the data step (``ready``: it found the data already built): a run directory's data is reused only when
    it was built with the same settings (else one line naming the ones that differ); data built now, or before the
    settings were recorded, has them recorded."""
    want = _data_settings(run, task)
    path = paths.data / DATA_SETTINGS
    if ready and path.is_file():
        have = json.loads(path.read_text())
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise ValueError(f"{paths.data} was built with other run settings {diff} (built, now); "
                             "use --overwrite or another --out")
    else:  # just built, or built before the settings were recorded
        write_json(path, want)


def _data(run: RunSection, task: str, paths: RunPaths) -> tuple[Path, Path]:
    """(training data directory, evaluation data directory)."""
    from tagpr.data.loading import LaMPDataError, split_files, write_examples

    splits_here = [run.train_split] if run.data is not None else [run.train_split, run.eval_split]
    try:
        ready = all(p.exists() for s in splits_here for p in split_files(paths.data, task, s))
    except LaMPDataError:
        ready = False
    if run.data is not None:
        if run.train_from == "split":
            return Path(run.data), Path(run.data)
        if not ready:  # leave-one-out questions from the eval (or train) split's profiles; its golds are not read
            from tagpr.data.loading import load_split
            from tagpr.data.loo import without_asked_items, write_loo

            source = run.eval_split if run.train_from == "profiles" else run.train_split
            questions = without_asked_items(load_split(run.data, task, source), task)
            write_loo(_loo(questions, task, run), paths.data, task, run.train_split, overwrite=True)
        _check_data_settings(run, task, paths, ready)
        return paths.data, Path(run.data)
    if not ready:
        from tagpr.data.synthetic import generate_splits

        splits = generate_splits(task, n_train=run.synthetic_train_users, n_dev=run.synthetic_dev_users, seed=run.seed)
        train = splits["train"]
        if run.train_from == "train-profiles":  # the training users' histories alone (their questions are not used)
            train = _loo(train, task, run)
        for exs, name in ((train, run.train_split), (splits["dev"], run.eval_split)):
            write_examples(exs, paths.data / get_task(task).name.replace("-", "_"), task, name)
    _check_data_settings(run, task, paths, ready)
    return paths.data, paths.data


def _loo(examples: list[Any], task: str, run: RunSection) -> list[Any]:
    """Leave-one-out training questions from ``examples``' histories: ``loo_per_user`` per user; with
    ``rl_loo_per_user``, the users whose questions start at ``rl_offset`` (the RL prompts) give that many instead
    (a user with a question before ``rl_offset`` keeps only those)."""
    from tagpr.data.loo import build_loo

    loo = build_loo(examples, task, per_user=run.loo_per_user, seed=run.seed, quoted=run.loo_quoted)
    if run.rl_loo_per_user is None or run.rl_loo_per_user == run.loo_per_user:
        return loo
    head = loo[:run.rl_offset]
    seen = {e.user_id for e in head}
    return head + [e for e in build_loo(examples, task, per_user=run.rl_loo_per_user, seed=run.seed,
                                               quoted=run.loo_quoted)
                   if e.user_id not in seen]


def _link_final(link: Path, target: Path) -> None:
    """``RUN_DIR/final``: the last RL stage's model (a relative symlink, so the run directory can move)."""
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def check_recipe(raw: dict[str, Any], where: str | Path) -> None:
    """Every section and key of a ``tagpr run`` recipe is one that some step reads: ValueError naming the
    first that is not (and the nearest known one), before anything runs."""
    from pydantic import ValidationError

    from tagpr.pipeline.chains import ChainsConfig
    from tagpr.prmu.train import PRMU_SECTION_KEYS
    from tagpr.training.rl import RLRecipe
    from tagpr.training.sft import SFTRecipe

    check_keys(str(where), raw, SECTIONS)
    for name, part in raw.items():
        if not isinstance(part, dict):
            raise ValueError(f"{where}: section {name!r} must be a mapping, not {type(part).__name__}")
    filled = {"chains": {"task", "data", "split"}, "sft": {"chains", "out"},
              "rl": {"task", "data", "split", "offset", "limit", "out", "prmu", "model", "guide_chains"}}  # set by the run
    known = {"run": RunSection.model_fields, "eval": EvalSection.model_fields, "prmu": PRMU_SECTION_KEYS,
             "chains": ChainsConfig.model_fields, "sft": SFTRecipe.model_fields, "rl": RLRecipe.model_fields}
    for name, part in raw.items():
        taken = sorted(set(part) & filled.get(name, set()))
        if taken:
            raise ValueError(f"{where}: {name}.{taken[0]} is set by tagpr run itself (from run: and the run directory); "
                             "remove it")
        check_keys(f"{where}: {name}", part, known[name])
    valid: dict[str, Any] = {}
    for name, model in (("run", RunSection), ("eval", EvalSection)):
        try:
            valid[name] = model.model_validate(raw.get(name, {}))
        except ValidationError as e:
            sep = "." if e.errors()[0].get("loc") else ": "  # "run.k: ..." for a field, "run: ..." for the whole section
            raise ValueError(f"{where}: {name}{sep}{validation_message(e)}") from None
    offset, limit = valid["run"].rl_offset, raw.get("chains", {}).get("limit")
    if offset and (limit is None or (isinstance(limit, int) and limit > offset)):  # SFT's chains: the first examples
        raise ValueError(f"{where}: chains.limit ({limit}) reads past run.rl_offset ({offset}), so SFT would train on "
                         f"the RL prompts' questions; set chains.limit <= {offset}")
    stages = raw.get("rl", {}).get("stages")
    if isinstance(stages, list):
        from tagpr.training.rl import RLStage

        for i, stage in enumerate(stages):
            if isinstance(stage, dict):
                check_keys(f"{where}: rl.stages[{i}]", stage, RLStage.model_fields)


def length_warnings(chains: Path, tokenizer_dir: Path, limits: dict[str, int | None]) -> list[str]:
    """One line for each generation limit of the recipe that would cut more than a tenth of the training chains
    (in the SFT model's tokens): a rollout or evaluation cut before its ``<answer>`` earns nothing and scores nothing.
    A compact LaMP-7 chain is ~277 tokens; with ``rl.max_completion_length: 224`` every rollout was cut."""
    from transformers import AutoTokenizer

    from tagpr.training.sft import read_chains

    if not chains.exists() or not tokenizer_dir.is_dir():
        return []
    records, _ = read_chains([chains])
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lengths = sorted(len(tok.encode(r["chain"], add_special_tokens=False)) + 1 for r in records)  # + end of turn
    p90 = lengths[min(len(lengths) - 1, int(0.9 * len(lengths)))]
    out = []
    for key, limit in limits.items():
        cut = sum(n > limit for n in lengths) / len(lengths) if limit else 0.0
        if cut > 0.1:
            out.append(f"{key}={limit} is shorter than {cut:.0%} of the training chains (90th percentile {p90}, "
                       f"longest {lengths[-1]} tokens): those outputs end before their answer; set it to >= {lengths[-1]}")
    return out


def _chains(section: dict[str, Any], run: RunSection, task: str, data_dir: Path, paths: RunPaths, progress: bool,
            rl: bool = False) -> None:
    """The SFT chains, or (``rl``) the same teacher's chains for the RL examples (``run.rl_offset``,
    ``run.rl_limit``)."""
    from tagpr.pipeline.chains import ChainBuilder, ChainsConfig

    where = {"offset": run.rl_offset, "limit": run.rl_limit} if rl else {}
    cfg = ChainsConfig.model_validate({"labeller": "none", **section, "task": task, "data": str(data_dir),
                                       "split": run.train_split, **where})
    out = paths.guide if rl else paths.chains
    out.parent.mkdir(parents=True, exist_ok=True)
    ChainBuilder(cfg, out).run(progress=progress)


def _sft(section: dict[str, Any], paths: RunPaths, progress: bool) -> dict[str, Any]:
    from tagpr.training.sft import SFTRecipe, train_sft

    done = paths.sft / "sft_summary.json"
    if done.exists():
        return json.loads(done.read_text())
    recipe = SFTRecipe.model_validate({**section, "chains": [str(paths.chains)], "out": str(paths.sft)})
    return train_sft(recipe, progress=progress)


def _prmu(section: dict[str, Any], run: RunSection, task: str, data_dir: Path, paths: RunPaths, progress: bool) -> Path:
    from tagpr.data.loading import load_split
    from tagpr.prmu.train import train_prmu

    if not (paths.prmu / "metrics.json").exists():
        examples = load_split(data_dir, task, run.train_split, require_golds=True)
        train_prmu(task, examples, paths.prmu, progress=progress, **section)
    return paths.prmu


# ------------------------------------------------------------------------------------------ comparison rows
def policy_change(before: Path, after: Path) -> dict[str, float]:
    """How much a training stage changed the model's held-out behaviour: the share of the examples both
    evaluation runs hold whose output text (``changed_outputs``) and parsed answer (``changed_answers``)
    differ.  Greedy decoding makes both exact: 0 means the stage did not move the policy where it is measured."""
    from tagpr.evaluation import run_records

    a = {str(r["id"]): r for r in run_records(before)[1]}
    b = {str(r["id"]): r for r in run_records(after)[1]}
    ids = [i for i in b if i in a]
    if not ids:
        return {}
    n = len(ids)
    return {"changed_outputs": sum(a[i].get("output") != b[i].get("output") for i in ids) / n,
            "changed_answers": sum(a[i].get("answer") != b[i].get("answer") for i in ids) / n}


def _baseline_labels(run: RunSection) -> list[str]:
    return [f"{b} (base)" if b == "tagpr" else b for b in run.baselines]


def _reference(wanted: str | None, labels: list[str]) -> str:
    """The comparison's reference row: ``eval.reference``, else ``rag`` when it is a baseline (the question
    the table answers: does each TagPR stage beat retrieval-augmented prompting?), else the first row."""
    if wanted is None:
        return "rag" if "rag" in labels else labels[0]
    if wanted not in labels:
        raise ValueError(f"eval.reference {wanted!r} is not a row of the comparison; choose from {', '.join(labels)}")
    return wanted


def _statistics(eval_dirs: dict[str, Path], reference: str, seed: int, unit: str = "auto") -> Any:
    """Paired bootstrap over users (or examples: ``unit``) of every row's held-out examples (``tagpr.stats``)."""
    from tagpr.stats import compare_run_dirs

    return compare_run_dirs(eval_dirs, reference, seed=seed, unit=unit)
