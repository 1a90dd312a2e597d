"""TagPR's reward functions for RL, as plain TRL-style callables ``(completions, **columns) -> list[float]``.

Each takes the completions of a batch plus the dataset columns it needs (TRL passes every column but
``prompt`` as a keyword list, repeated per generation), returns one float in [0, 1] per completion and never
raises on any text: model output is untrusted.

- :class:`TaskReward` (``task``): ``R_task`` of the chain's final answer (``<answer>``, else the whole text)
  against the ``gold`` column, by the task registry's own reward.
- :class:`TagReward` (``tag``): ``R_tag`` of the chain given the ``num_items`` items shown in the prompt.
- ``prmu``: :class:`tagpr.prmu.PRMUReward`, the personalization reward model (columns ``input``, ``profile``).

:func:`reward_functions` builds the set for a stage, names and weights aligned, for TRL's ``reward_weights``.
A component with weight 0 is still computed and logged (so a stage shows how what it does not optimise drifts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tagpr.scoring import completion_text
from tagpr.tags import check_chain, final_answer
from tagpr.tasks import LaMPTask, get_task

log = logging.getLogger(__name__)

REWARD_NAMES = ("task", "tag", "prmu")


def reward_name(func: Callable[..., Any]) -> str:
    """The name TRL logs a reward function under (``rewards/<name>/mean``)."""
    return getattr(func, "__name__", type(func).__name__)


def _per_completion(completions: Sequence[Any], values: Sequence[Any] | None, column: str,
                    score: Callable[[str, Any], float]) -> list[float]:
    """``score(text, value)`` for each completion and its ``column`` value; 0.0 where scoring fails."""
    if values is None:
        raise ValueError(f"this reward needs the dataset column {column!r}")
    if len(values) != len(completions):
        raise ValueError(f"column {column!r} has {len(values)} values for {len(completions)} completions")
    out = []
    for c, v in zip(completions, values):
        try:
            out.append(float(score(completion_text(c), v)))
        except Exception:  # noqa: BLE001 - a reward must never take a run down
            log.debug("%s reward failed", column, exc_info=True)
            out.append(0.0)
    return out


class TaskReward:
    """``R_task`` in [0, 1] of the final answer against the gold (0 for an unparsable answer)."""

    __name__ = "task"

    def __init__(self, task: LaMPTask | str):
        self.task = get_task(task)

    def __call__(self, completions: Sequence[Any], gold: Sequence[Any] | None = None, **_: Any) -> list[float]:
        return _per_completion(completions, gold, "gold",
                               lambda text, g: self.task.reward(final_answer(text, self.task), g))


class TagReward:
    """``R_tag`` in [0, 1]: grammar, coverage, valid citations and a parsable answer (see :mod:`tagpr.tags`)."""

    __name__ = "tag"

    def __init__(self, task: LaMPTask | str):
        self.task = get_task(task)

    def __call__(self, completions: Sequence[Any], num_items: Sequence[Any] | None = None, **_: Any) -> list[float]:
        return _per_completion(completions, num_items, "num_items",
                               lambda text, k: check_chain(text, self.task, int(k)).reward)


def reward_functions(task: LaMPTask | str, weights: Mapping[str, float], prmu: str | Path | None = None,
                     prmu_reward: Callable[..., list[float]] | None = None) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """Reward callables and their weights for one stage: ``task`` and ``tag`` always, ``prmu`` when a PRMU
    directory (or a ready ``prmu_reward``) is given.  A positive ``prmu`` weight without a PRMU is an error."""
    unknown = set(weights) - set(REWARD_NAMES)
    if unknown:
        raise ValueError(f"unknown reward components {sorted(unknown)}; known: {list(REWARD_NAMES)}")
    funcs: list[Callable[..., list[float]]] = [TaskReward(task), TagReward(task)]
    if prmu_reward is None and prmu is not None:
        from tagpr.prmu import PRMUReward

        prmu_reward = PRMUReward(prmu, get_task(task).name)
    if prmu_reward is not None:
        funcs.append(prmu_reward)
    elif weights.get("prmu", 0.0) > 0:
        raise ValueError("the stage weights the PRMU reward but no PRMU model was given (--prmu DIR)")
    names = [reward_name(f) for f in funcs]
    return funcs, [float(weights.get(n, 0.0)) for n in names]
