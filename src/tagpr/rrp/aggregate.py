"""Cross-referencing: combine several candidate answers into one.

* ``vote`` (labels): the most frequent valid answer; ties go to the earliest candidate.
* ``median`` (ratings): the median of the valid ratings, rounded half up to a whole score.
* ``mbr`` (any task, the default for text): minimum Bayes risk under the task's own reward, i.e. the
  candidate with the highest mean reward against the others (ROUGE for text; for labels it is a vote).
* ``reconcile``: one more model pass that sees the history and the candidates and writes the answer;
  when that answer is not valid, ``mbr`` decides.

Every function takes untrusted answers and never raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tagpr.generation.base import GenerationBackend, SamplingParams
from tagpr.prompts import numbered_items
from tagpr.tasks import LaMPTask, get_task

AGGREGATES = ("auto", "vote", "median", "mbr", "reconcile")


def resolve_aggregate(name: str, task: LaMPTask | str) -> str:
    if name not in AGGREGATES:
        raise ValueError(f"unknown aggregate {name!r}; choose from {', '.join(AGGREGATES)}")
    if name != "auto":
        return name
    return get_task(task).answers.aggregate


def vote(answers: Sequence[str], task: LaMPTask | str) -> str:
    t = get_task(task)
    valid = [a for a in answers if t.is_valid_answer(a)]
    if not valid:
        return answers[0] if answers else ""
    counts: dict[str, int] = {}
    for a in valid:
        counts[a] = counts.get(a, 0) + 1
    best = max(counts.values())
    return next(a for a in valid if counts[a] == best)


def median(answers: Sequence[str], task: LaMPTask | str) -> str:
    t = get_task(task)
    values = sorted(v for v in (_number(a) for a in answers if t.is_valid_answer(a)) if v is not None)
    if not values:
        return answers[0] if answers else ""
    n = len(values)
    m = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return str(int(math.floor(m + 0.5)))


def mbr(answers: Sequence[str], task: LaMPTask | str) -> str:
    t = get_task(task)
    cands = [a for a in answers if t.is_valid_answer(a)] or list(answers)
    if len(cands) <= 1:
        return cands[0] if cands else ""
    best, best_score = cands[0], -1.0
    for i, a in enumerate(cands):
        score = sum(t.reward(a, b) for j, b in enumerate(cands) if j != i) / (len(cands) - 1)
        if score > best_score:
            best, best_score = a, score
    return best


def combine(answers: Sequence[str], task: LaMPTask | str, how: str) -> str:
    """vote | median | mbr (``reconcile`` needs a model: see :func:`reconcile`)."""
    how = resolve_aggregate(how, task)
    if how == "vote":
        return vote(answers, task)
    if how == "median":
        return median(answers, task)
    return mbr(answers, task)


def reconcile_prompt(task: LaMPTask | str, input_text: str, items: Sequence[Mapping[str, Any]] | None,
                     answers: Sequence[str]) -> str:
    t = get_task(task)
    lines = ["Pick or write the answer this user would give, consistent with their past items."]
    if items:
        lines += ["", "The user's past items:", numbered_items(t, items)]
    lines += ["", f"Task: {input_text}", "", "Candidate answers:"]
    lines += [f"({chr(97 + i)}) {a}" for i, a in enumerate(answers)]
    lines += ["", f"Write only the final answer ({t.answer_hint})."]
    return "\n".join(lines)


def reconcile(backend: GenerationBackend, task: LaMPTask | str, inputs: Sequence[str],
              items: Sequence[Sequence[Mapping[str, Any]] | None], candidates: Sequence[Sequence[str]],
              max_new_tokens: int = 48) -> tuple[list[str], int]:
    """One greedy pass per example over its candidates; returns (answers, generated tokens)."""
    t = get_task(task)
    prompts = [reconcile_prompt(t, x, it, c) for x, it, c in zip(inputs, items, candidates)]
    gens = backend.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    out, tokens = [], 0
    for row, cands in zip(gens, candidates):
        tokens += row[0].completion_tokens
        a = t.parse(row[0].text)
        out.append(a if t.is_valid_answer(a) else mbr(cands, t))
    return out, tokens


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
