"""Evaluation runs: prompts -> generation -> parsed answers -> official metrics, resumable.

A run directory holds:

* ``config.json``: the settings (a resumed run must match them);
* ``examples.jsonl``: one line per finished example (prompt, raw output, parsed answer, reward,
  token counts), appended and flushed batch by batch, so a killed run loses at most the batch in
  flight and resuming skips every finished id;
* ``predictions.json``: the official golds shape; ``metrics.json``: official metrics and costs.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tagpr.data.loading import Example, load_split, predictions_json
from tagpr.floors import FLOORS, floor_rule
from tagpr.generation import GenerationBackend, Prompt, SamplingParams, make_backend, resolve_backend
from tagpr.prompts import build_prompt
from tagpr.retrieval import Retriever, make_retriever
from tagpr.runstate import ProgressBar, read_jsonl, truncate_partial_line
from tagpr.tasks import LaMPTask, get_task

Method = Literal["zero-shot", "rag", "rrp", "tagpr", "copy-input", "majority", "user-majority"]  # the last three: tagpr.floors
TAGPR_MAX_NEW_TOKENS = 448  # a tagged chain and its answer


class RunMismatchError(ValueError):
    pass


class EvalConfig(BaseModel):
    """Settings of one evaluation run (also the schema of ``config.json``)."""

    task: str
    data: str
    split: str = "dev"
    method: Method = "rag"
    retriever: str = "bm25"
    k: int = Field(4, ge=1)
    limit: int | None = Field(None, ge=1)
    model: str | None = None  # None = the embedded default
    backend: str = "auto"  # auto = ct2 on a CPU with ctranslate2 installed, else transformers
    base_url: str | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    max_prompt_tokens: int = Field(512, ge=16)  # the official LaMP budget
    temperature: float = Field(0.0, ge=0.0)
    batch_size: int | None = Field(None, ge=1)  # prompts per generate call; None = the backend's default
    seed: int = 0
    # RRP (method "rrp")
    candidates: int = Field(1, ge=1)
    aggregate: str = "auto"  # auto | vote | median | mbr | reconcile
    budgets: str | None = None  # tokens per template section, e.g. "40,64,64,48"; None = task default
    intervene: bool = True
    think: bool = False  # the model reasons inside <think>...</think>
    chunk_tokens: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _check_rrp(self) -> "EvalConfig":
        if self.candidates > 1 and self.temperature <= 0:
            raise ValueError("--candidates > 1 needs sampling: set --temperature > 0 (e.g. 0.7)")
        if self.method in FLOORS:
            floor_rule(self.method, self.task, [])  # a floor that does not apply to the task is a config error
        if self.method == "rrp":
            from tagpr.rrp import parse_budgets, resolve_aggregate

            parse_budgets(self.budgets, self.task)
            resolve_aggregate(self.aggregate, self.task)
        return self

    def label(self) -> str:
        """The method as tables show it, e.g. ``rrp x5 vote`` or ``rrp no-intervention``."""
        if self.method != "rrp":
            return self.method
        parts = ["rrp"] + ([] if self.intervene else ["no-intervention"])
        if self.candidates > 1:
            parts.append(f"x{self.candidates} {self.aggregate}")
        return " ".join(parts)

    def identity(self) -> dict[str, Any]:
        """Settings that must match for a run directory to be resumed (``limit`` may grow)."""
        d = self.model_dump()
        d.pop("limit")
        d.pop("batch_size")
        d["backend"] = resolve_backend(self.backend)
        if self.method != "rrp":
            for key in _RRP_FIELDS:
                d.pop(key)
        d["task"] = get_task(self.task).name
        return d


LOCAL_BATCH = {"ct2": 64, "transformers": 16}  # default prompts per generate call of the local backends
_RRP_FIELDS = ("candidates", "aggregate", "budgets", "intervene", "think", "chunk_tokens")


class EvalRun:
    """Evaluate one method on one task split; call :meth:`run`."""

    def __init__(self, config: EvalConfig, out_dir: str | Path, backend: GenerationBackend | None = None,
                 retriever: Retriever | None = None, examples: Sequence[Example] | None = None):
        self.config = config
        self.task: LaMPTask = get_task(config.task)
        self.out = Path(out_dir)
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
                kw["reuse_cache"] = self.config.method == "rrp" and self.batch_size == 1
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
        default = TAGPR_MAX_NEW_TOKENS if self.config.method == "tagpr" else self.task.answers.max_new_tokens
        return SamplingParams(
            max_new_tokens=self.config.max_new_tokens or default,
            temperature=self.config.temperature,
            seed=self.config.seed,
        )

    def items_for(self, example: Example) -> list[dict[str, Any]] | None:
        """The retrieved profile items (None for zero-shot and the floors)."""
        if self.config.method == "zero-shot" or self.config.method in FLOORS:
            return None
        idx = self.retriever.rank(example, self.task, self.config.k)
        return [example.profile[i] for i in idx]

    @functools.cached_property
    def prompt_style(self) -> str:
        """The TagPR prompt form the model was trained on (SFT and RL record it beside the weights), read once."""
        from tagpr.prompts import model_prompt_style

        return model_prompt_style(self.config.model)

    def prompt_for(self, example: Example, items: list[dict[str, Any]] | None = None) -> Prompt:
        if self.config.method == "rrp":
            from tagpr.rrp import build_rrp_prompt

            return build_rrp_prompt(self.task, example.input, items)
        if self.config.method == "tagpr":
            from tagpr.prompts import build_tagpr_messages

            return build_tagpr_messages(self.task, example.input, items, style=self.prompt_style)
        return build_prompt(self.task, example.input, items, getattr(self.backend, "tokenizer", None),
                            self.config.max_prompt_tokens)

    # -------------------------------------------------------------------------------- run state
    def _check_config(self, overwrite: bool) -> None:
        cfg_path = self.out / "config.json"
        if cfg_path.exists() and not overwrite:
            old = EvalConfig.model_validate_json(cfg_path.read_text()).identity()
            if self.config.backend == "auto" and old["backend"] != resolve_backend("auto") and self._backend is None:
                # a run made with another backend (e.g. transformers, the default before ct2) goes on with it
                self.config = self.config.model_copy(update={"backend": old["backend"]})
            new = self.config.identity()
            if old != new:
                diff = {k: (v, new[k]) for k, v in old.items() if new[k] != v}
                raise RunMismatchError(
                    f"{self.out} holds a run with other settings {diff}; use another --out or --overwrite"
                )
        if overwrite:
            for name in ("examples.jsonl", "predictions.json", "metrics.json"):
                (self.out / name).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(self.config.model_dump_json(indent=2))

    def finished(self) -> dict[str, dict[str, Any]]:
        """Records already written (a line cut short by a kill is ignored and redone)."""
        return {str(rec["id"]): rec for rec in read_jsonl(self.out / "examples.jsonl", ("id",), tolerant=True)}

    # ------------------------------------------------------------------------------------- run
    def run(self, overwrite: bool = False, progress: bool = True,
            on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
        self._check_config(overwrite)
        examples = self.examples()
        done = self.finished()
        # longest inputs first: each generate call then holds prompts of similar length (less padding, and
        # CTranslate2 forwards a batch's prompts at once only up to its shortest one)
        todo = sorted((e for e in examples if e.id not in done), key=lambda e: -len(e.input))
        params = self.sampling()
        path = self.out / "examples.jsonl"
        if path.exists() and todo:
            truncate_partial_line(path)
        t0 = time.perf_counter()
        try:
            label = f"{self.task.name} {self.config.label()}"
            with ProgressBar(progress, len(examples), len(examples) - len(todo), label) as advance:
                with open(path, "a", encoding="utf-8") as fh:
                    for start in range(0, len(todo), self.batch_size):
                        batch = todo[start : start + self.batch_size]
                        for rec in self.evaluate_batch(batch, params):
                            done[rec["id"]] = rec
                            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                        fh.flush()
                        os.fsync(fh.fileno())
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
            closer = getattr(self._backend, "close", None)
            if callable(closer):
                closer()
            self._backend = None

    @functools.cached_property
    def floor(self) -> Callable[[Example], str]:
        """The rule of a floor method (``tagpr.floors``), fitted on the whole split."""
        return floor_rule(self.config.method, self.task, self.examples())

    def evaluate_batch(self, batch: Sequence[Example], params: SamplingParams) -> list[dict[str, Any]]:
        if self.config.method in FLOORS:
            records = [{"id": e.id, "prompt": None, "output": self.floor(e), "prompt_tokens": 0, "completion_tokens": 0}
                       for e in batch]
            for rec in records:
                rec["answer"] = self.task.parse(rec["output"])
            return self._finish_records(batch, records)
        items = [self.items_for(e) for e in batch]
        prompts = [self.prompt_for(e, it) for e, it in zip(batch, items)]
        if self.config.method == "rrp":
            records = self._rrp_records(batch, items, prompts, params)
        else:
            gens = self.backend.generate(prompts, params)
            records = []
            for e, p, it, g in zip(batch, prompts, items, gens):
                gen = g[0]
                rec = {"id": e.id, "prompt": p, "output": gen.text, "answer": self.task.parse(gen.text),
                       "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}
                if self.config.method == "tagpr":
                    rec.update(self._tagpr_fields(gen.text, len(it or ())))
                records.append(rec)
        return self._finish_records(batch, records)

    def _finish_records(self, batch: Sequence[Example], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for e, rec in zip(batch, records):
            rec["valid_answer"] = self.task.is_valid_answer(rec["answer"])
            if e.user_id is not None:  # the unit tagpr.stats resamples
                rec["user_id"] = e.user_id
            if e.gold is not None:
                rec["gold"] = e.gold
                rec["reward"] = self.task.reward(rec["answer"], e.gold)
        return records

    def _tagpr_fields(self, text: str, num_items: int) -> dict[str, Any]:
        """The answer from ``<answer>`` (the whole text when there is none), and the chain's grammar check."""
        from tagpr.tags import check_chain, final_answer

        check = check_chain(text, self.task, num_items)
        answer = final_answer(text, self.task, check)
        return {"answer": answer, "tag_valid": check.valid, "r_tag": check.reward, "tag_errors": check.errors[:5],
                "num_items": num_items}

    def _rrp_records(self, batch: Sequence[Example], items: list[Any], prompts: list[Prompt],
                     params: SamplingParams) -> list[dict[str, Any]]:
        from dataclasses import replace

        from tagpr.rrp import InterventionController, check_template, combine, reconcile, resolve_aggregate

        cfg = self.config
        controller = InterventionController(self.backend, self.task, cfg.budgets, chunk_tokens=cfg.chunk_tokens,
                                            think=cfg.think, intervene=cfg.intervene)
        runs = controller.run(prompts, replace(params, n=cfg.candidates))
        how = resolve_aggregate(cfg.aggregate, self.task)
        answers = [[c.answer for c in cands] for cands in runs]
        extra_tokens = [0] * len(batch)
        if cfg.candidates == 1:
            final = [a[0] for a in answers]
        elif how == "reconcile":
            final, tokens = reconcile(self.backend, self.task, [e.input for e in batch], items, answers)
            extra_tokens = [tokens // max(1, len(batch))] * len(batch)
        else:
            final = [combine(a, self.task, how) for a in answers]
        records = []
        for e, p, cands, answer, extra in zip(batch, prompts, runs, final, extra_tokens):
            checks = [check_template(c.text, self.task) for c in cands]
            counts = [c.counts() for c in cands]
            records.append({
                "id": e.id, "prompt": p, "output": cands[0].text, "answer": answer,
                "candidates": [c.answer for c in cands] if len(cands) > 1 else None,
                "prompt_tokens": cands[0].prompt_tokens,
                "completion_tokens": sum(c.completion_tokens for c in cands) + extra,
                "calls": sum(c.calls for c in cands),
                "interventions": {r: sum(c[r] for c in counts) / len(cands) for r in counts[0]},
                "adherent": sum(ch.adherent for ch in checks) / len(checks),
                "sections_in_order": sum(ch.in_order for ch in checks) / len(checks),
            })
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
            if self.config.method == "tagpr":
                rec.update(self._tagpr_fields(rec["output"], int(rec.get("num_items", 0))))
            elif self.config.method == "rrp" and self.config.candidates == 1:
                from tagpr.rrp import extract_answer

                rec["answer"] = extract_answer(rec["output"], self.task)
            elif self.config.method != "rrp":
                rec["answer"] = self.task.parse(rec["output"])
            rec["valid_answer"] = self.task.is_valid_answer(rec["answer"])
            e = by_id.get(rec["id"])
            if e is not None and e.gold is not None:
                rec["reward"] = self.task.reward(rec["answer"], e.gold)
        tmp = self.out / "examples.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()), encoding="utf-8")
        os.replace(tmp, self.out / "examples.jsonl")
        return self.finalize(examples, done, None)

    def finalize(self, examples: Sequence[Example], done: dict[str, dict[str, Any]], elapsed: float | None) -> dict[str, Any]:
        preds = {e.id: done[e.id]["answer"] for e in examples}
        (self.out / "predictions.json").write_text(json.dumps(predictions_json(self.task, preds), ensure_ascii=False, indent=1))
        recs = [done[e.id] for e in examples]
        result: dict[str, Any] = {"task": self.task.name, "method": self.config.label(), "n": len(examples)}
        if all(e.gold is not None for e in examples):
            result.update(self.task.metrics([r["answer"] for r in recs], [e.gold for e in examples]))
            result["mean_reward"] = sum(r["reward"] for r in recs) / max(1, len(recs))
        result["valid_answer_rate"] = sum(bool(r["valid_answer"]) for r in recs) / max(1, len(recs))
        result["mean_prompt_tokens"] = sum(r["prompt_tokens"] for r in recs) / max(1, len(recs))
        result["mean_completion_tokens"] = sum(r["completion_tokens"] for r in recs) / max(1, len(recs))
        if recs and all("r_tag" in r for r in recs):  # TagPR: tag-grammar validity and mean R_tag
            result["tag_validity"] = sum(bool(r["tag_valid"]) for r in recs) / len(recs)
            result["mean_r_tag"] = sum(r["r_tag"] for r in recs) / len(recs)
        if recs and all("adherent" in r for r in recs):  # RRP: template adherence and interventions
            n = len(recs)
            result["template_adherence"] = sum(r["adherent"] for r in recs) / n
            result["sections_in_order"] = sum(r["sections_in_order"] for r in recs) / n
            per_rule = {k: sum(r["interventions"].get(k, 0) for r in recs) / n for k in recs[0]["interventions"]}
            result["mean_interventions"] = sum(per_rule.values())
            result["interventions_per_rule"] = per_rule
            result["mean_calls"] = sum(r["calls"] for r in recs) / n
        if elapsed is not None:
            result["seconds_this_session"] = round(elapsed, 2)
        (self.out / "metrics.json").write_text(json.dumps(result, indent=2))
        return result


def evaluate(config: EvalConfig, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Convenience: ``EvalRun(config, out_dir, ...).run()``."""
    run_kw = {k: kwargs.pop(k) for k in ("overwrite", "progress") if k in kwargs}
    return EvalRun(config, out_dir, **kwargs).run(**run_kw)


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
        config = EvalConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"))
        get_task(config.task)
    except (ValidationError, OSError, KeyError) as e:
        raise ValueError(f"{cfg_path}: not a tagpr eval config ({str(e).splitlines()[0]})") from None
    if not preds_path.is_file():
        raise ValueError(f"{out}: the run is not finished (no predictions.json); resume it with tagpr eval")
    try:
        ids = [str(g["id"]) for g in json.loads(preds_path.read_text(encoding="utf-8"))["golds"]]
    except (json.JSONDecodeError, KeyError, TypeError, OSError) as e:
        raise ValueError(f"{preds_path}: not a predictions file ({e})") from None
    done = EvalRun(config, out).finished()
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
