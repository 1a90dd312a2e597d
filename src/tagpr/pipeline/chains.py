"""``tagpr chains build``: retrieve -> teacher chains -> rejection sampling -> rationalization ->
labelling of untagged chains -> validation -> de-duplication -> JSONL, resumable.

Files (in the ``--out`` directory):

* ``chains.jsonl``: one accepted chain per line (``id``, ``task``, ``input``, ``items`` shown, ``chain``,
  ``answer``, ``gold``, ``reward``, ``r_tag``, ``source`` sampled | rationalized, ``teacher``);
* ``chains.examples.jsonl``: one line per finished example with its counts (what ``stats`` reads);
* ``chains.config.json``: the settings; a resumed build must match them.

Each batch appends its chains, then its example lines, flushed to disk; on resume, chains of an example
without its line (a kill between the two writes) are dropped and the example is done again, so nothing
is lost or duplicated.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tagpr.data.loading import Example, load_split
from tagpr.pipeline.labelling import Labeller, is_tagged, tag_free_text
from tagpr.pipeline.teachers import AnalyticTeacher, ChainRequest, ModelTeacher, Teacher, leaks_hint
from tagpr.retrieval import Retriever, make_retriever
from tagpr.runstate import ProgressBar, RunDir, RunMismatchError, read_jsonl
from tagpr.tags import check_chain
from tagpr.tasks import get_task

log = logging.getLogger(__name__)



class ChainsConfig(BaseModel):
    task: str
    data: str
    split: str = "train"
    teacher: Literal["analytic", "model"] = "analytic"  # a model teacher generates with ``backend``
    backend: str = "auto"  # the model teacher's: auto | ct2 | transformers | openai
    style: Literal["full", "compact"] = "full"  # analytic teacher: all 9 tags, or the 5-tag compact chain
    # analytic teacher, compact chains: the rule they read their answer with off the shown items (RATING_RULES or
    # LABEL_RULES of tagpr.pipeline.teachers), "fitted": the one with the lowest error on the fit examples, or
    # "each": one chain per rule (rejection sampling keeps the right ones), so SFT learns them all and RL chooses
    rule: str = "fitted"
    model: str | None = None
    base_url: str | None = None
    retriever: str = "bm25"
    k: int = Field(4, ge=1)
    samples: int = Field(4, ge=1)
    threshold: float | None = Field(None, ge=0.0, le=1.0)  # task reward to accept; None = the answer space's
    rationalize: bool = True
    labeller: str = "embedding"  # embedding | llm | none (for untagged chains)
    temperature: float = Field(0.8, ge=0.0)
    offset: int = Field(0, ge=0)  # skip the first N examples (e.g. those kept for evaluation)
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    concurrency: int = Field(8, ge=1)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _teacher_backend(cls, data: Any) -> Any:
        """``teacher: ct2`` (a backend's name, as recipes and saved builds said before ``backend``) is the model
        teacher on that backend."""
        if isinstance(data, dict) and data.get("teacher") not in (None, "analytic", "model"):
            from tagpr.generation import backend_name

            try:
                backend = backend_name(str(data["teacher"]))
            except ValueError:
                raise ValueError(f"teacher {data['teacher']!r}: choose analytic or model (with --backend)") from None
            data = {**data, "teacher": "model", "backend": backend}
        return data

    @model_validator(mode="after")
    def _known_backend(self) -> "ChainsConfig":
        from tagpr.generation import backend_name

        backend_name(self.backend)
        return self

    @model_validator(mode="after")
    def _known_rule(self) -> "ChainsConfig":
        from tagpr.pipeline.teachers import check_rule

        if self.teacher == "analytic":  # a model teacher writes its own reasoning
            check_rule(self.task, self.rule, self.style)
        elif self.rule != "fitted":
            raise ValueError(f"rule {self.rule!r}: rules are the analytic teacher's, not the model teacher's")
        return self

    def accept_threshold(self) -> float:
        return self.threshold if self.threshold is not None else get_task(self.task).answers.accept_threshold

    def identity(self) -> dict[str, Any]:
        d = self.model_dump()
        for key in ("limit", "batch_size", "concurrency"):
            d.pop(key)
        if d["rule"] == "fitted":  # the only rule before the setting existed: builds saved then still resume
            d.pop("rule")
        d["task"] = get_task(self.task).name
        return d


ChainsMismatchError = RunMismatchError  # the name chain builds raised before the one run abstraction


def sidecar(out: Path, what: str) -> Path:
    return out.with_name(f"{out.stem}.{what}{out.suffix if what == 'examples' else '.json'}")


def chains_dir(out: Path) -> RunDir:
    """The run directory of a chains file: ``chains.jsonl`` beside its ``chains.examples.jsonl`` log and its
    ``chains.config.json`` settings."""
    return RunDir(out.parent, sidecar(out, "config").name, (out.name, sidecar(out, "examples").name), "a chain build")


def make_teacher(cfg: ChainsConfig, fit_examples: Sequence[Example], retriever: Retriever | None = None) -> Teacher:
    t = get_task(cfg.task)
    if cfg.teacher == "analytic":
        teacher = AnalyticTeacher(t, temperature=cfg.temperature, seed=cfg.seed, style=cfg.style, k=cfg.k,
                                  retriever=retriever, rule=cfg.rule).fit(fit_examples)
        if teacher.rule_error:
            log.info("analytic teacher: compact chains read the %s rule off the shown items (%s; fit %s: %s)",
                     teacher.rule, {"fitted": "fitted", "each": "fitted; chains.rule each: one chain per rule, this "
                                    "one's first"}.get(cfg.rule, "chains.rule"),
                     "MAE" if t.answers.ordered else "error rate",
                     ", ".join(f"{k} {v:.3f}" for k, v in teacher.rule_error.items()))
        return teacher
    from tagpr.generation import make_backend

    kw: dict[str, Any] = {}
    if cfg.backend == "openai":
        kw.update(concurrency=cfg.concurrency, **({"base_url": cfg.base_url} if cfg.base_url else {}))
    else:
        kw["batch_size"] = cfg.batch_size
    return ModelTeacher(make_backend(cfg.backend, cfg.model, **kw), t, temperature=cfg.temperature,
                        name=f"{cfg.backend}:{cfg.model or 'embedded'}")


def make_labeller(cfg: ChainsConfig, teacher: Teacher) -> Labeller | None:
    if cfg.labeller == "none":
        return None
    from tagpr.pipeline.labelling import EmbeddingLabeller, LLMLabeller

    if cfg.labeller == "llm":
        if not isinstance(teacher, ModelTeacher):
            raise ValueError("--labeller llm needs a model teacher (its backend labels the steps)")
        return LLMLabeller(teacher.backend, fallback=EmbeddingLabeller())
    if cfg.labeller == "embedding":
        return EmbeddingLabeller()
    raise ValueError(f"unknown labeller {cfg.labeller!r}; choose embedding | llm | none")


class ChainBuilder:
    def __init__(self, config: ChainsConfig, out: str | Path, teacher: Teacher | None = None,
                 examples: Sequence[Example] | None = None, retriever: Retriever | None = None,
                 labeller: Labeller | None | str = "auto"):
        self.config = config
        self.task = get_task(config.task)
        self.out = Path(out)
        self.dir = chains_dir(self.out)
        self._examples = examples
        self._teacher = teacher
        self.retriever = retriever or make_retriever(config.retriever)
        self._labeller = labeller

    def examples(self) -> list[Example]:
        exs = list(self._examples) if self._examples is not None else load_split(
            self.config.data, self.task, self.config.split, require_golds=True)
        missing = [e.id for e in exs if e.gold is None]
        if missing:
            raise ValueError(f"{self.config.data} {self.config.split}: example id={missing[0]!r} has no gold output "
                             "(chains need golds for rejection sampling)")
        return exs

    @property
    def teacher(self) -> Teacher:
        if self._teacher is None:
            self._teacher = make_teacher(self.config, self.examples(), self.retriever)
        return self._teacher

    @property
    def labeller(self) -> Labeller | None:
        if self._labeller == "auto":
            self._labeller = make_labeller(self.config, self.teacher)
        return self._labeller  # type: ignore[return-value]

    # ------------------------------------------------------------------------------ state
    def _check_config(self, overwrite: bool) -> None:
        self.dir.start(self.config, ChainsConfig.identity, overwrite)

    def finished(self) -> dict[str, dict[str, Any]]:
        return self.dir.records(sidecar(self.out, "examples").name)

    def _repair(self, done: set[str]) -> None:
        """Drop chains of unfinished examples (a kill between a batch's two writes) and any line a kill cut short."""
        if self.out.exists():
            self.dir.rewrite(self.out.name, [r for r in read_jsonl(self.out, ("id",), tolerant=True)
                                             if str(r.get("id")) in done])

    # -------------------------------------------------------------------------------- run
    def run(self, overwrite: bool = False, progress: bool = True, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
        self._check_config(overwrite)
        exs = self.examples()[self.config.offset :]
        exs = exs[: self.config.limit] if self.config.limit else exs
        done = self.finished()
        self._repair(set(done))
        todo = [e for e in exs if e.id not in done]
        with ProgressBar(progress, len(exs), len(exs) - len(todo), f"{self.task.name} chains ({self.teacher.name})") as advance:
            with self.dir.appending(self.out.name) as add_chains, \
                    self.dir.appending(sidecar(self.out, "examples").name) as add_examples:
                for start in range(0, len(todo), self.config.batch_size):
                    batch = todo[start : start + self.config.batch_size]
                    chains, summaries = self.build_batch(batch)
                    add_chains(chains)  # the chains first: an example line marks its chains complete
                    add_examples(summaries)
                    done.update((rec["id"], rec) for rec in summaries)
                    advance(len(batch))
                    if on_batch is not None:
                        on_batch(len(done))
        return chain_stats(self.out)

    def build_batch(self, batch: Sequence[Example]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cfg, t = self.config, self.task
        threshold = cfg.accept_threshold()
        reqs = [ChainRequest(t, e, [e.profile[i] for i in self.retriever.rank(e, t, cfg.k)]) for e in batch]
        sampled = self.teacher.write(reqs, cfg.samples)
        kept: list[list[dict[str, Any]]] = [[] for _ in batch]
        counts = [Counter() for _ in batch]
        for j, (r, texts) in enumerate(zip(reqs, sampled)):
            self._judge(r, texts, "sampled", threshold, kept[j], counts[j])
        need = [j for j in range(len(batch)) if not kept[j]] if cfg.rationalize else []
        if need:
            hinted = [ChainRequest(t, reqs[j].example, reqs[j].items, hint=reqs[j].example.gold) for j in need]
            for j, texts in zip(need, self.teacher.write(hinted, cfg.samples)):
                self._judge(reqs[j], texts, "rationalized", threshold, kept[j], counts[j])
        chains, summaries = [], []
        for r, recs, c in zip(reqs, kept, counts):
            chains.extend(recs)
            summaries.append({"id": r.example.id, "accepted": len(recs),
                              "source": recs[0]["source"] if recs else None, **c})
        return chains, summaries

    def _judge(self, r: ChainRequest, texts: Sequence[str], source: str, threshold: float,
               kept: list[dict[str, Any]], counts: Counter) -> None:
        seen = {_norm(x["chain"]) for x in kept}
        for text in texts:
            counts[f"{source}"] += 1
            if source == "rationalized" and leaks_hint(text):
                counts["leaked"] += 1
                continue
            if not is_tagged(text):
                tagged = tag_free_text(text, self.task, self.labeller) if self.labeller is not None else None
                if tagged is None:
                    counts["untaggable"] += 1
                    continue
                counts["labelled"] += 1
                text = tagged
            check = check_chain(text, self.task, len(r.items))
            if not check.valid:
                counts["invalid"] += 1
                continue
            reward = self.task.reward(check.answer, r.example.gold)
            if reward < threshold:
                counts["wrong"] += 1
                continue
            key = _norm(text)
            if key in seen:
                counts["duplicate"] += 1
                continue
            seen.add(key)
            kept.append({"id": r.example.id, "task": self.task.name, "input": r.example.input, "items": r.items,
                         "chain": text, "answer": check.answer, "gold": r.example.gold, "reward": reward,
                         "r_tag": check.reward, "source": source, "teacher": self.teacher.name,
                         "style": getattr(self.teacher, "style", "full")})


CHAINS_FILE = "chains.jsonl"


def build_chains(out: str | Path, config: ChainsConfig | None = None, *, teacher: Teacher | str | None = None,
                 examples: Sequence[Example] | None = None, retriever: Retriever | None = None,
                 overwrite: bool = False, progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Build tagged chains into the directory ``out`` (``chains.jsonl``, its ``chains.examples.jsonl`` log and
    ``chains.config.json``); returns :func:`chain_stats`.  ``settings`` are :class:`ChainsConfig` fields (``task``,
    ``data``, ``split``, ``teacher``, ``samples``, ...), over ``config`` when both are given.  A build with the same
    settings is resumed; ``overwrite`` starts again.  ``teacher``, ``examples`` and ``retriever`` replace what the
    settings would make; a ``teacher`` string is the setting (``analytic`` or ``model``)."""
    if isinstance(teacher, str):
        settings["teacher"], teacher = teacher, None
    cfg = ChainsConfig.model_validate({**(config.model_dump() if config is not None else {}), **settings})
    builder = ChainBuilder(cfg, Path(out) / CHAINS_FILE, teacher=teacher, examples=examples, retriever=retriever)
    return builder.run(overwrite=overwrite, progress=progress)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


# ------------------------------------------------------------------------------------ statistics
def chain_stats(path: str | Path, plot: str | Path | None = None) -> dict[str, Any]:
    """Acceptance per source, tag frequency and chain length of a chains file (and a PNG of the tags)."""
    from tagpr.tags import TAGS, parse_chain

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such chains file")
    chains = read_jsonl(path, ("id",), tolerant=True)
    examples = read_jsonl(sidecar(path, "examples"), ("id",), tolerant=True)
    n_ex = len(examples)
    tag_counts: Counter = Counter()
    steps, chars = [], []
    for c in chains:
        parsed = parse_chain(c.get("chain", ""))
        tag_counts.update(s.tag for s in parsed.steps)
        steps.append(len(parsed.steps))
        chars.append(len(c.get("chain", "")))
    by_source = Counter(c.get("source") for c in chains)
    tried = Counter()
    for e in examples:
        for key in ("sampled", "rationalized", "leaked", "invalid", "wrong", "duplicate", "labelled", "untaggable"):
            tried[key] += int(e.get(key, 0) or 0)
    with_chain = sum(1 for e in examples if e.get("accepted"))
    out = {
        "chains": len(chains),
        "examples": n_ex,
        "examples_with_chain": with_chain,
        "example_coverage": with_chain / n_ex if n_ex else 0.0,
        "accepted_by_source": dict(by_source),
        "acceptance_rate": {src: (by_source.get(src, 0) / tried[src] if tried[src] else None)
                            for src in ("sampled", "rationalized")},
        "rejected": {k: tried[k] for k in ("invalid", "wrong", "duplicate", "leaked", "untaggable")},
        "labelled_free_text": tried["labelled"],
        "tag_frequency": {t: tag_counts.get(t, 0) for t in TAGS},
        "mean_steps": sum(steps) / len(steps) if steps else 0.0,
        "mean_chars": sum(chars) / len(chars) if chars else 0.0,
        "mean_reward": sum(c.get("reward", 0.0) for c in chains) / len(chains) if chains else 0.0,
    }
    if plot is not None:
        from tagpr.reports import plot_tags

        plot_tags(out["tag_frequency"], plot, title=f"{path.name}: {len(chains)} chains")
    return out
