"""Evaluation methods: what a method needs (a model, retrieved profile items) and how it turns a batch of examples
into per-example records.  The evaluation run (:class:`tagpr.evaluation.EvalRun`) knows no method by name: it asks
the method registered under ``EvalConfig.method``.

Built in: ``zero-shot`` and ``rag`` (the official LaMP prompts), ``tagpr`` (a tagged reasoning chain, then the
answer), ``rrp`` (the reasoning template with interventions, :mod:`tagpr.rrp`), and the floors by rule
(``copy-input``, ``majority``, ``user-majority``: :mod:`tagpr.floors`).  A method of your own::

    from tagpr import RuleMethod, register_method

    @register_method
    class ProfileMedian(RuleMethod):
        name = "profile-median"

        def answer(self, example):
            scores = sorted(int(p["score"]) for p in example.profile)
            return str(scores[len(scores) // 2])

Then ``tagpr.evaluate(..., method="profile-median")`` evaluates it like any other (resumable run directory, official
metrics, paired bootstrap with ``tagpr compare``).  A method that generates overrides :meth:`Method.prompt` (and
:meth:`Method.answer_fields` for its own parsing) or :meth:`Method.records` for a whole batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tagpr.floors import FLOORS, floor_rule

if TYPE_CHECKING:
    from tagpr.data.loading import Example
    from tagpr.evaluation import EvalConfig, EvalRun
    from tagpr.generation import GenerationBackend, Prompt, SamplingParams
    from tagpr.tasks import LaMPTask

RRP_SETTINGS = ("candidates", "aggregate", "budgets", "intervene", "think", "chunk_tokens")


class Method:
    """One evaluated method; an instance serves one evaluation run (``self.run``).

    Class attributes say what the method needs: ``needs_model`` (a generation backend), ``retrieves`` (the top
    ``k`` profile items by the run's retriever), ``settings`` (the ``EvalConfig`` fields only this method reads:
    they belong to a run's identity only for it), ``max_new_tokens`` (default generation length; None: the task's answer space's), ``resumes_turns``
    (continues partial answers: a one-sequence transformers backend keeps its KV cache)."""

    name: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True
    retrieves: ClassVar[bool] = True
    settings: ClassVar[tuple[str, ...]] = ()
    max_new_tokens: ClassVar[int | None] = None
    resumes_turns: ClassVar[bool] = False

    def __init__(self, run: EvalRun):
        self.run = run

    @property
    def task(self) -> LaMPTask:
        return self.run.task

    @property
    def config(self) -> EvalConfig:
        return self.run.config

    @property
    def backend(self) -> GenerationBackend:
        return self.run.backend

    # ------------------------------------------------------------------------- settings
    @classmethod
    def check(cls, config: EvalConfig) -> None:
        """A ValueError when ``config`` does not fit the method (raised when the settings are made, before any work)."""

    @classmethod
    def label(cls, config: EvalConfig) -> str:
        """The method as result tables show it."""
        return cls.name

    def default_max_new_tokens(self) -> int:
        return self.max_new_tokens or self.task.answers.max_new_tokens

    # ------------------------------------------------------------------------- one batch
    def prompt(self, example: Example, items: list[dict[str, Any]] | None) -> Prompt | None:
        """The official LaMP prompt (with the retrieved items when there are any), cut to ``max_prompt_tokens``."""
        from tagpr.prompts import build_prompt

        return build_prompt(self.task, example.input, items, getattr(self.backend, "tokenizer", None),
                            self.config.max_prompt_tokens)

    def answer_fields(self, text: str, num_items: int) -> dict[str, Any]:
        """What a generated text gives a record: at least its parsed ``answer``."""
        return {"answer": self.task.parse(text)}

    def records(self, batch: Sequence[Example], items: list[list[dict[str, Any]] | None],
                prompts: list[Prompt | None], params: SamplingParams) -> list[dict[str, Any]]:
        """One record per example: ``id``, ``prompt``, ``output``, ``answer``, ``prompt_tokens``, ``completion_tokens``
        (the run adds validity, user id, gold and reward)."""
        records = []
        for e, p, it, g in zip(batch, prompts, items, self.backend.generate(prompts, params)):
            gen = g[0]
            fields = self.answer_fields(gen.text, len(it or ()))
            records.append({"id": e.id, "prompt": p, "output": gen.text, "answer": fields.pop("answer"),
                            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens, **fields})
        return records

    def reparse(self, record: dict[str, Any]) -> None:
        """Parse a stored record's output again (``tagpr eval`` rescoring after a parser change)."""
        record.update(self.answer_fields(record["output"], int(record.get("num_items", 0))))

    def summary(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Method-specific metrics of the finished records (beside the task's metrics and the costs)."""
        return {}


class RuleMethod(Method):
    """A method that answers by a rule, no model and no retrieval: define :meth:`answer`."""

    needs_model = False
    retrieves = False

    def answer(self, example: Example) -> str:
        raise NotImplementedError

    def prompt(self, example: Example, items: list[dict[str, Any]] | None) -> None:
        return None

    def records(self, batch: Sequence[Example], items: list[list[dict[str, Any]] | None],
                prompts: list[Prompt | None], params: SamplingParams) -> list[dict[str, Any]]:
        records = [{"id": e.id, "prompt": None, "output": self.answer(e), "prompt_tokens": 0, "completion_tokens": 0}
                   for e in batch]
        for rec in records:
            rec.update(self.answer_fields(rec["output"], 0))
        return records


# --------------------------------------------------------------------------------------------- registry
METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method] | None = None, *, replace: bool = False) -> Any:
    """Register a :class:`Method` subclass under its ``name`` (a class decorator, also ``register_method(cls)``).
    ValueError when the name is taken, unless ``replace``."""

    def add(c: type[Method]) -> type[Method]:
        if not (isinstance(c, type) and issubclass(c, Method)) or not c.name:
            raise ValueError(f"{c!r}: a method is a tagpr.Method subclass with a name")
        old = METHODS.get(c.name)
        redefined = old is not None and (old.__module__, old.__qualname__) == (c.__module__, c.__qualname__)
        if old is not None and old is not c and not (replace or redefined):  # a re-run cell or script redefines
            raise ValueError(f"a method named {c.name!r} is already registered ({METHODS[c.name].__qualname__}); "
                             "pass replace=True to replace it")
        METHODS[c.name] = c
        return c

    return add if cls is None else add(cls)


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; ValueError naming the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None


# --------------------------------------------------------------------------------------------- built-ins
@register_method
class ZeroShot(Method):
    """The official LaMP prompt without profile items."""

    name = "zero-shot"
    retrieves = False


@register_method
class RAG(Method):
    """The official LaMP prompt with the top-k retrieved profile items."""

    name = "rag"


@register_method
class TagPR(Method):
    """A TagPR model: a tagged reasoning chain over the retrieved items, then ``<answer>``."""

    name = "tagpr"
    max_new_tokens = 448  # a tagged chain and its answer

    @functools.cached_property
    def prompt_style(self) -> str:
        """The TagPR prompt form the model was trained on (SFT and RL record it beside the weights), read once."""
        from tagpr.prompts import model_prompt_style

        return model_prompt_style(self.config.model)

    def prompt(self, example: Example, items: list[dict[str, Any]] | None) -> Prompt:
        from tagpr.prompts import build_tagpr_messages

        return build_tagpr_messages(self.task, example.input, items, style=self.prompt_style)

    def answer_fields(self, text: str, num_items: int) -> dict[str, Any]:
        """The answer (:func:`tagpr.tags.final_answer`: ``<answer>``, else what follows ``</think>``; nothing for a
        chain cut inside its reasoning), and the chain's grammar check."""
        from tagpr.tags import check_chain, final_answer

        check = check_chain(text, self.task, num_items)
        answer = final_answer(text, self.task, check)
        return {"answer": answer, "tag_valid": check.valid, "r_tag": check.reward, "tag_errors": check.errors[:5],
                "num_items": num_items}

    def summary(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not records:
            return {}
        return {"tag_validity": sum(bool(r["tag_valid"]) for r in records) / len(records),
                "mean_r_tag": sum(r["r_tag"] for r in records) / len(records)}


@register_method
class RRP(Method):
    """Reasoning-template prompting (:mod:`tagpr.rrp`): sections generated in turns, interventions when the model
    strays, optionally several sampled candidates aggregated."""

    name = "rrp"
    settings = RRP_SETTINGS
    resumes_turns = True

    @classmethod
    def check(cls, config: EvalConfig) -> None:
        from tagpr.rrp import parse_budgets, resolve_aggregate

        parse_budgets(config.budgets, config.task)
        resolve_aggregate(config.aggregate, config.task)

    @classmethod
    def label(cls, config: EvalConfig) -> str:
        """e.g. ``rrp x5 vote`` or ``rrp no-intervention``."""
        parts = ["rrp"] + ([] if config.intervene else ["no-intervention"])
        if config.candidates > 1:
            parts.append(f"x{config.candidates} {config.aggregate}")
        return " ".join(parts)

    def prompt(self, example: Example, items: list[dict[str, Any]] | None) -> Prompt:
        from tagpr.rrp import build_rrp_prompt

        return build_rrp_prompt(self.task, example.input, items)

    def reparse(self, record: dict[str, Any]) -> None:
        """One candidate: its answer again; several keep their aggregated answer."""
        if self.config.candidates == 1:
            from tagpr.rrp import extract_answer

            record["answer"] = extract_answer(record["output"], self.task)

    def records(self, batch: Sequence[Example], items: list[list[dict[str, Any]] | None],
                prompts: list[Prompt | None], params: SamplingParams) -> list[dict[str, Any]]:
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

    def summary(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Template adherence and interventions."""
        if not records:
            return {}
        n = len(records)
        per_rule = {k: sum(r["interventions"].get(k, 0) for r in records) / n for k in records[0]["interventions"]}
        return {"template_adherence": sum(r["adherent"] for r in records) / n,
                "sections_in_order": sum(r["sections_in_order"] for r in records) / n,
                "mean_interventions": sum(per_rule.values()),
                "interventions_per_rule": per_rule,
                "mean_calls": sum(r["calls"] for r in records) / n}


class Floor(RuleMethod):
    """A floor by rule (:mod:`tagpr.floors`), fitted on the whole split evaluated."""

    @classmethod
    def check(cls, config: EvalConfig) -> None:
        floor_rule(cls.name, config.task, [])  # a floor that does not apply to the task is a config error

    @functools.cached_property
    def rule(self) -> Callable[[Example], str]:
        return floor_rule(self.name, self.task, self.run.examples())

    def answer(self, example: Example) -> str:
        return self.rule(example)


for _floor in FLOORS:
    register_method(type(f"Floor_{_floor.replace('-', '_')}", (Floor,), {"name": _floor, "__doc__": Floor.__doc__}))
