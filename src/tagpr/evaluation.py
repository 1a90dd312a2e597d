"""Evaluation runs: prompts -> generation -> parsed answers -> official metrics, resumable.

A run directory holds:

* ``config.json``: the settings (a resumed run must match them);
* ``examples.jsonl``: one line per finished example (prompt, raw output, parsed answer, reward,
  token counts), appended and flushed batch by batch, so a killed run loses at most the batch in
  flight and resuming skips every finished id;
* ``predictions.json``: the official golds shape; ``metrics.json``: official metrics and costs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from tagpr.data.loading import Example, load_split, predictions_json
from tagpr.generation import (LOCAL_BATCH, GenerationBackend, SamplingParams, backend_name, close_backend, make_backend,
                              resolve_backend)
from tagpr.methods import METHODS, RRP_SETTINGS, Method, get_method
from tagpr.retrieval import Retriever, make_retriever
from tagpr.runstate import ProgressBar, RunDir, RunMismatchError
from tagpr.tasks import LaMPTask, get_task

__all__ = ["EvalConfig", "EvalRun", "RunMismatchError", "evaluate", "metrics_table", "run_records"]


class EvalConfig(BaseModel):
    """Settings of one evaluation run (also the schema of ``config.json``)."""

    task: str
    data: str
    split: str = "dev"
    method: str = "rag"  # a registered method (tagpr.methods): zero-shot | rag | rrp | tagpr | a floor | your own
    retriever: str = "bm25"
    k: int = Field(4, ge=1)
    limit: int | None = Field(None, ge=1)
    model: str | None = None  # None = the embedded default
    backend: str = "auto"  # auto = openvino (else ct2) on a CPU when installed, else transformers
    base_url: str | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    max_prompt_tokens: int = Field(512, ge=16)  # the official LaMP budget
    temperature: float = Field(0.0, ge=0.0)
    batch_size: int | None = Field(None, ge=1)  # prompts per generate call; None = the backend's default
    seed: int = 0
    # RRP (method "rrp"; tagpr.methods.RRP_SETTINGS)
    candidates: int = Field(1, ge=1)
    aggregate: str = "auto"  # auto | vote | median | mbr | reconcile
    budgets: str | None = None  # tokens per template section, e.g. "40,64,64,48"; None = task default
    intervene: bool = True
    think: bool = False  # the model reasons inside <think>...</think>
    chunk_tokens: int = Field(32, ge=1)

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str, info: ValidationInfo) -> str:
        if not _reading_saved(info):
            get_method(v)
        return v

    @model_validator(mode="after")
    def _check_method(self, info: ValidationInfo) -> "EvalConfig":
        if self.candidates > 1 and self.temperature <= 0:
            raise ValueError("--candidates > 1 needs sampling: set --temperature > 0 (e.g. 0.7)")
        backend_name(self.backend)
        if not _reading_saved(info):
            get_method(self.method).check(self)
        return self

    def label(self) -> str:
        """The method as tables show it, e.g. ``rrp x5 vote`` or ``rrp no-intervention``."""
        cls = METHODS.get(self.method)  # a finished run of a method this process has not registered: its name
        return cls.label(self) if cls is not None else self.method

    def identity(self) -> dict[str, Any]:
        """Settings that must match for a run directory to be resumed (``limit`` may grow)."""
        d = self.model_dump()
        d.pop("limit")
        d.pop("batch_size")
        d["backend"] = resolve_backend(self.backend)
        for key in RRP_SETTINGS:  # a method's own settings count for that method only
            if key not in get_method(self.method).settings:
                d.pop(key)
        d["task"] = get_task(self.task).name
        return d


def _reading_saved(info: ValidationInfo) -> bool:
    """Settings a finished run saved, read back (``run_records``): they need not name a method this process knows."""
    return bool((info.context or {}).get("saved"))


RUN_OUTPUTS = ("examples.jsonl", "predictions.json", "metrics.json")


class EvalRun:
    """Evaluate one method on one task split; call :meth:`run`."""

    def __init__(self, config: EvalConfig, out_dir: str | Path, backend: GenerationBackend | None = None,
                 retriever: Retriever | None = None, examples: Sequence[Example] | None = None):
        self.config = config
        self.task: LaMPTask = get_task(config.task)
        self.out = Path(out_dir)
        self.dir = RunDir(self.out, "config.json", RUN_OUTPUTS)
        self.method: Method = get_method(config.method)(self)
        self._backend = backend
        self._backend_given = backend is not None
        self._retriever = retriever
        self._examples = examples

    # ------------------------------------------------------------------------------------ parts
    @property
    def backend(self) -> GenerationBackend:
        if self._backend is None:
            kw: dict[str, Any] = {}
            kind = resolve_backend(self.config.backend)
            if kind in LOCAL_BATCH:
                kw["batch_size"] = self.batch_size
            if kind == "transformers":
                # one sequence at a time: RRP's resumed turns reuse their KV cache
                kw["reuse_cache"] = self.method.resumes_turns and self.batch_size == 1
            elif self.config.base_url:
                kw["base_url"] = self.config.base_url
            self._backend = make_backend(self.config.backend, self.config.model, **kw)
        return self._backend

    @property
    def batch_size(self) -> int:
        """Examples per generate call (and per write to ``examples.jsonl``)."""
        if self.config.batch_size:
            return self.config.batch_size
        kind = getattr(self._backend, "name", None) or resolve_backend(self.config.backend)
        return LOCAL_BATCH.get(kind, 16)

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = make_retriever(self.config.retriever)
        return self._retriever

    def examples(self) -> list[Example]:
        exs = list(self._examples) if self._examples is not None else load_split(self.config.data, self.task, self.config.split)
        return exs[: self.config.limit] if self.config.limit else exs

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.config.max_new_tokens or self.method.default_max_new_tokens(),
            temperature=self.config.temperature,
            seed=self.config.seed,
        )

    def items_for(self, example: Example) -> list[dict[str, Any]] | None:
        """The retrieved profile items (None for a method that retrieves none)."""
        if not self.method.retrieves:
            return None
        idx = self.retriever.rank(example, self.task, self.config.k)
        return [example.profile[i] for i in idx]

    def prompt_for(self, example: Example, items: list[dict[str, Any]] | None = None) -> Any:
        return self.method.prompt(example, items)

    # -------------------------------------------------------------------------------- run state
    def _check_config(self, overwrite: bool) -> None:
        if overwrite:
            self.dir.discard(inputs=(self.config.model, self.config.data))
        saved = self.dir.saved_settings()
        if saved is not None:
            old = EvalConfig.model_validate(saved).identity()
            if self.config.backend == "auto" and old["backend"] != resolve_backend("auto") and self._backend is None:
                # a run made with another backend (e.g. transformers, the default before ct2) goes on with it
                self.config = self.config.model_copy(update={"backend": old["backend"]})
            self.dir.check_identity(old, self.config.identity())
        self.dir.save_settings(self.config)

    def finished(self) -> dict[str, dict[str, Any]]:
        """Records already written (a line cut short by a kill is ignored and redone)."""
        return self.dir.records("examples.jsonl")

    # ------------------------------------------------------------------------------------- run
    def run(self, overwrite: bool = False, progress: bool = True,
            on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Evaluate the examples not finished yet (all of them with ``overwrite``); returns the metrics."""
        if self.method.needs_model and self._backend is None:
            from tagpr.embedded import check_model

            check_model(self.config.model, self.config.backend)  # a missing model directory fails before any work
        examples = self.examples()  # bad data fails before --overwrite deletes anything
        self._check_config(overwrite)
        done = self.finished()
        # longest inputs first: each generate call then holds prompts of similar length (less padding, and
        # CTranslate2 forwards a batch's prompts at once only up to its shortest one)
        todo = sorted((e for e in examples if e.id not in done), key=lambda e: -len(e.input))
        params = self.sampling()
        t0 = time.perf_counter()
        try:
            label = f"{self.task.name} {self.config.label()}"
            with ProgressBar(progress, len(examples), len(examples) - len(todo), label) as advance:
                with self.dir.appending("examples.jsonl") as append:
                    for start in range(0, len(todo), self.batch_size):
                        batch = todo[start : start + self.batch_size]
                        records = self.evaluate_batch(batch, params)
                        done.update((rec["id"], rec) for rec in records)
                        append(records)
                        advance(len(batch))
                        if on_batch is not None:
                            on_batch(len(done))
        finally:
            self.close()
        elapsed = time.perf_counter() - t0
        return self.finalize(examples, done, elapsed if todo else None)

    def close(self) -> None:
        """Release a backend this run made itself (a passed-in backend belongs to its caller)."""
        if self._backend is not None and not self._backend_given:
            close_backend(self._backend)
            self._backend = None

    def evaluate_batch(self, batch: Sequence[Example], params: SamplingParams) -> list[dict[str, Any]]:
        items = [self.items_for(e) for e in batch]
        prompts = [self.prompt_for(e, it) for e, it in zip(batch, items)]
        return self._finish_records(batch, self.method.records(batch, items, prompts, params))

    def _finish_records(self, batch: Sequence[Example], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for e, rec in zip(batch, records):
            rec["valid_answer"] = self.task.is_valid_answer(rec["answer"])
            if e.user_id is not None:  # the unit tagpr.stats resamples
                rec["user_id"] = e.user_id
            if e.gold is not None:
                rec["gold"] = e.gold
                rec["reward"] = self.task.reward(rec["answer"], e.gold)
        return records

    def rescore(self) -> dict[str, Any]:
        """Parse the stored outputs again with the current parser and recompute rewards and metrics
        (after a parser change; no generation).  RRP runs with several candidates keep their aggregated answers."""
        examples = self.examples()
        done = self.finished()
        missing = [e.id for e in examples if e.id not in done]
        if missing:
            raise RunMismatchError(f"{self.out}: {len(missing)} examples are not finished (e.g. id={missing[0]!r})")
        by_id = {e.id: e for e in examples}
        for rec in done.values():
            self.method.reparse(rec)
            rec["valid_answer"] = self.task.is_valid_answer(rec["answer"])
            e = by_id.get(rec["id"])
            if e is not None and e.gold is not None:
                rec["reward"] = self.task.reward(rec["answer"], e.gold)
        self.dir.rewrite("examples.jsonl", done.values())
        return self.finalize(examples, done, None)

    def finalize(self, examples: Sequence[Example], done: dict[str, dict[str, Any]], elapsed: float | None) -> dict[str, Any]:
        preds = {e.id: done[e.id]["answer"] for e in examples}
        self.dir.write_json("predictions.json", predictions_json(self.task, preds), indent=1, ensure_ascii=False)
        recs = [done[e.id] for e in examples]
        result: dict[str, Any] = {"task": self.task.name, "method": self.config.label(), "n": len(examples)}
        if all(e.gold is not None for e in examples):
            result.update(self.task.metrics([r["answer"] for r in recs], [e.gold for e in examples]))
            result["mean_reward"] = sum(r["reward"] for r in recs) / max(1, len(recs))
        result["valid_answer_rate"] = sum(bool(r["valid_answer"]) for r in recs) / max(1, len(recs))
        result["mean_prompt_tokens"] = sum(r["prompt_tokens"] for r in recs) / max(1, len(recs))
        result["mean_completion_tokens"] = sum(r["completion_tokens"] for r in recs) / max(1, len(recs))
        result.update(self.method.summary(recs))  # e.g. TagPR's tag validity, RRP's template adherence
        if elapsed is not None:
            result["seconds_this_session"] = round(elapsed, 2)
        self.dir.write_json("metrics.json", result)
        return result


def evaluate(out: str | Path, config: EvalConfig | None = None, *, backend: GenerationBackend | str | None = None,
             retriever: Retriever | None = None, examples: Sequence[Example] | None = None, overwrite: bool = False,
             progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Evaluate a method on a LaMP split into the run directory ``out``; returns the metrics (also
    ``out/metrics.json``; per-example records in ``out/examples.jsonl``, official predictions in
    ``out/predictions.json``).

    ``settings`` are :class:`EvalConfig` fields (``task``, ``data``, ``split``, ``method``, ``k``, ``model``,
    ``backend``, ``limit``, ...), over ``config`` when both are given.  A directory holding a run with the same
    settings is resumed (finished examples are not generated again); ``overwrite`` discards it first.
    ``backend`` is a backend's name (a setting: ``auto``, ``ct2``, ``transformers``, ``openai``) or a generation
    backend object; an object, ``retriever`` and ``examples`` replace what the settings would load (a backend passed
    in stays open)::

        metrics = tagpr.evaluate("runs/lamp3-rag", task="LaMP-3", data="data/lamp", method="rag", k=4, limit=100)
    """
    if isinstance(backend, str):
        settings["backend"], backend = backend, None
    cfg = EvalConfig.model_validate({**(config.model_dump() if config is not None else {}), **settings})
    run = EvalRun(cfg, out, backend=backend, retriever=retriever, examples=examples)
    return run.run(overwrite=overwrite, progress=progress)


def run_records(run_dir: str | Path) -> tuple[EvalConfig, list[dict[str, Any]]]:
    """An evaluation run directory's settings and per-example records (``examples.jsonl`` lines), for the
    examples its ``predictions.json`` and ``metrics.json`` cover, in that order.  ValueError when the
    directory is not a finished run."""
    from pydantic import ValidationError

    out = Path(run_dir)
    cfg_path, preds_path = out / "config.json", out / "predictions.json"
    if not cfg_path.is_file():
        raise ValueError(f"{out}: not an evaluation run directory (no config.json)")
    try:
        config = EvalConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"), context={"saved": True})
        get_task(config.task)
    except (ValidationError, OSError, KeyError) as e:
        raise ValueError(f"{cfg_path}: not a tagpr eval config ({str(e).splitlines()[0]})") from None
    if not preds_path.is_file():
        raise ValueError(f"{out}: the run is not finished (no predictions.json); resume it with tagpr eval")
    try:
        ids = [str(g["id"]) for g in json.loads(preds_path.read_text(encoding="utf-8"))["golds"]]
    except (json.JSONDecodeError, KeyError, TypeError, OSError) as e:
        raise ValueError(f"{preds_path}: not a predictions file ({e})") from None
    done = RunDir(out).records("examples.jsonl")
    missing = [i for i in ids if i not in done]
    if missing:
        raise ValueError(f"{out}/examples.jsonl: no record for {len(missing)} predicted example(s), e.g. id={missing[0]!r}")
    return config, [done[i] for i in ids]


def metrics_table(rows: Iterable[dict[str, Any]], title: str = "results"):
    """A rich Table of metric dicts, grouped by task: each task shows its own metrics (a task column only when
    the rows hold more than one task: the title names a single one)."""
    from rich.table import Table

    rows = list(rows)
    metric_cols: list[str] = []
    for r in rows:
        try:
            names = get_task(str(r.get("task"))).answers.metric_names
        except KeyError:
            continue
        for c in names:
            if c not in metric_cols:
                metric_cols.append(c)
    extra = [c for c in ("valid_answer_rate", "tag_validity", "mean_r_tag", "template_adherence", "mean_interventions", "mean_completion_tokens")
             if any(c in r for r in rows)]
    table = Table(title=title)
    several = len({str(r.get("task")) for r in rows}) > 1
    if several:
        table.add_column("task")
    table.add_column("method", no_wrap=True)
    table.add_column("n", justify="right")
    for c in metric_cols + extra:
        table.add_column(_COLUMN_NAMES.get(c, c), justify="right")
    last_task = None
    for r in rows:
        if last_task is not None and r.get("task") != last_task:
            table.add_section()
        last_task = r.get("task")
        cells = []
        for c in metric_cols + extra:
            v = r.get(c)
            cells.append("" if v is None else f"{v:.1f}" if c in ("mean_completion_tokens", "mean_interventions")
                         else f"{v:.4f}")
        table.add_row(*([str(r.get("task", ""))] if several else []), str(r.get("method", "")), str(r.get("n", "")), *cells)
    return table


_COLUMN_NAMES = {"valid_answer_rate": "valid", "mean_completion_tokens": "gen tokens",
                 "template_adherence": "adherence", "mean_interventions": "interventions",
                 "tag_validity": "tag valid", "mean_r_tag": "R_tag"}
