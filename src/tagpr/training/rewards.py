"""TagPR's reward functions for RL, as plain TRL-style callables ``(completions, **columns) -> list[float]``.

Each takes the completions of a batch plus the dataset columns it needs (TRL passes every column but
``prompt`` as a keyword list, repeated per generation), returns one float in [0, 1] per completion and never
raises on any text: model output is untrusted.

- :class:`TaskReward` (``task``): ``R_task`` of the chain's final answer (:func:`tagpr.tags.final_answer`: ``<answer>``;
  a chain cut inside its reasoning answers nothing) against the ``gold`` column, by the task registry's own reward.
- :class:`TagReward` (``tag``): ``R_tag`` of the chain given the ``num_items`` items shown in the prompt.
- ``prmu``: :class:`tagpr.prmu.PRMUReward`, the personalization reward model (columns ``input``, ``profile``).
- :class:`FaithfulReward` (``faithful``, tasks that rewrite their input: LaMP-7): how many of a compact chain's
  claims about its shown items and its input are true, whether its answer does what it says, and how many of the
  habits its teacher would list it names (columns ``input``, ``shown``, ``profile``); no gold.

:func:`reward_functions` builds the set for a stage, names and weights aligned, for TRL's ``reward_weights``.
A component with weight 0 is still computed and logged (so a stage shows how what it does not optimise drifts).
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tagpr.scoring import completion_text
from tagpr.tags import check_chain, final_answer
from tagpr.tasks import LaMPTask, get_task

log = logging.getLogger(__name__)

REWARD_NAMES = ("task", "tag", "prmu", "faithful")


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
    """``R_task`` in [0, 1] of the final answer against the gold (0 for an unparsable answer).

    ``label_similarity`` (classification only, in [0, 1)): a wrong label of the label space earns that much times
    the cosine similarity of the two labels' sentence embeddings (clipped at 0), so a group whose completions all
    miss the gold still ranks "romance" above "horror" for a "comedy" gold: a dense reward where the exact one
    gives every completion 0.  The official metric (evaluation) is unchanged."""

    __name__ = "task"

    def __init__(self, task: LaMPTask | str, label_similarity: float = 0.0, embedder: Any = None):
        if not 0.0 <= label_similarity < 1.0:
            raise ValueError(f"label_similarity must be in [0, 1), got {label_similarity}")
        self.task = get_task(task)
        if label_similarity > 0 and len(self.task.labels or ()) < 3:
            raise ValueError(f"label_similarity is for classification tasks with 3 or more labels; {self.task.name} "
                             f"is a {self.task.kind} task" + (f" with {len(self.task.labels)} labels"
                                                              if self.task.labels else ""))
        self.label_similarity = label_similarity
        self._sims: dict[tuple[str, str], float] = {}
        if label_similarity > 0:  # every label pair once, now: a broken encoder fails here, not per completion
            if embedder is None:
                from tagpr.embedded import load_sentence_encoder

                embedder = load_sentence_encoder(None)
            labels = list(self.task.labels)
            vecs = embedder.encode(labels, normalize_embeddings=True, convert_to_numpy=True)
            sims = vecs @ vecs.T
            self._sims = {(a, b): max(0.0, float(sims[i, j])) for i, a in enumerate(labels) for j, b in enumerate(labels)}

    def _similarity(self, a: str, b: str) -> float:
        return self._sims.get((a, b), 0.0)

    def _score(self, text: str, gold: Any) -> float:
        answer = final_answer(text, self.task)
        r = self.task.reward(answer, gold)
        if r == 0.0 and self.label_similarity > 0:
            a, g = str(answer).strip(), str(gold).strip()
            if a in self.task.labels and g in self.task.labels:
                return self.label_similarity * self._similarity(a, g)
        return r

    def __call__(self, completions: Sequence[Any], gold: Sequence[Any] | None = None, **_: Any) -> list[float]:
        return _per_completion(completions, gold, "gold", self._score)


class TagReward:
    """``R_tag`` in [0, 1]: grammar, coverage, valid citations and a parsable answer (see :mod:`tagpr.tags`)."""

    __name__ = "tag"

    def __init__(self, task: LaMPTask | str):
        self.task = get_task(task)

    def __call__(self, completions: Sequence[Any], num_items: Sequence[Any] | None = None, **_: Any) -> list[float]:
        return _per_completion(completions, num_items, "num_items",
                               lambda text, k: check_chain(text, self.task, int(k)).reward)


class FaithfulReward:
    """The share of a compact rewrite chain's checkable claims that its prompt bears out, whether its answer
    follows it, and how many of the habits its teacher would list it names
    (:func:`tagpr.pipeline.teachers.verify_rewrite_chain`): in [0, 1], 1 for every teacher chain, 0 for a chain
    without the compact rewrite steps.  Columns ``input`` (the question), ``shown`` (the JSON list of the shown
    items' texts) and ``profile`` (the JSON list of the user's items), as :func:`tagpr.training.rl.rl_rows`
    writes them; without ``profile`` a chain that names no habit and keeps its input scores 1."""

    __name__ = "faithful"

    def __init__(self, task: LaMPTask | str):
        self.task = self.task_of(task)

    @staticmethod
    def task_of(task: LaMPTask | str) -> LaMPTask:
        """``task``, or the ValueError a faithful reward for it raises (recipes check their stages with it)."""
        t = get_task(task)
        if not t.rewrites_input:
            raise ValueError(f"the faithful reward checks chains that rewrite their input (LaMP-7), not {t.name}'s")
        return t

    def __call__(self, completions: Sequence[Any], input: Sequence[Any] | None = None,  # noqa: A002 - TRL's column
                 shown: Sequence[Any] | None = None, profile: Sequence[Any] | None = None, **_: Any) -> list[float]:
        from tagpr.pipeline.style import measure_habits
        from tagpr.pipeline.teachers import verify_rewrite_chain

        if input is None or shown is None:
            raise ValueError("this reward needs the dataset columns 'input' and 'shown'")
        rows = list(zip(input, shown, profile if profile is not None else [None] * len(input)))
        if len(rows) != len(completions):
            rows = None  # _per_completion names the mismatch
        prompts: dict[tuple[str, ...], tuple[str, list[str], list[Any] | None]] = {}
        load = lambda x: json.loads(x) if isinstance(x, str) else x  # noqa: E731 - a JSON column, or its value
        as_key = lambda x: x if x is None or isinstance(x, str) else json.dumps(x, default=str)  # noqa: E731

        def prompt(row: tuple[Any, Any, Any]) -> tuple[str, list[str], list[Any] | None]:
            q, shown_items, items = row
            key = (str(q), as_key(shown_items), as_key(items))
            if key not in prompts:  # a group's completions share their prompt: measure its profile once
                prompts[key] = (self.task.retrieval_query(str(q)), [str(x) for x in load(shown_items)],
                                None if items is None else measure_habits([self.task.item_output(it)
                                                                           for it in load(items)]))
            return prompts[key]

        return _per_completion(completions, rows, "shown",
                               lambda text, row: verify_rewrite_chain(text, *prompt(row)).score)


class SpreadLog:
    """The within-group spread of each reward component: wrapped reward callables record, per call (a GRPO
    batch), the mean over its groups (runs of one prompt's completions) of the population standard deviation of
    their values (the whole batch, every process's rows).  A component whose spread is ~0 cannot move the policy,
    whatever its weight.  :meth:`pop` returns the means since the last pop (``spread/<name>`` in ``rewards.csv``).
    ``greedy_first``: each group's first completion is the policy's greedy one (a stage with ``greedy: true``), and
    its mean value is logged too (``greedy/<name>``: the training prompts' score as evaluation decodes them)."""

    def __init__(self, group_size: int | None = None, greedy_first: bool = False) -> None:
        self.group_size = group_size  # TRL's num_generations: groups are consecutive blocks of this size
        self.greedy_first = greedy_first
        self.values: dict[str, list[float]] = {}

    def wrap(self, func: Callable[..., list[float]]) -> Callable[..., list[float]]:
        name = reward_name(func)

        def wrapped(completions: Sequence[Any], **columns: Any) -> list[float]:
            mine = func(completions, **columns)
            values, columns = _whole_batch(mine, columns)
            g = self.group_size
            if g and g > 1 and len(values) % g == 0:
                runs = [(a, a + g) for a in range(0, len(values), g)]
            else:  # no group size: runs of one prompt (or input)
                from tagpr.prmu.reward import group_runs

                keys = columns.get("prompts") or columns.get("input")
                if keys is None or len(keys) != len(values):
                    return mine
                runs = group_runs([k if isinstance(k, str) else json.dumps(k, sort_keys=True, default=str)
                                   for k in keys])
            stds = [statistics.pstdev(values[a:b]) for a, b in runs if b - a > 1]
            if stds:
                self.values.setdefault(f"spread/{name}", []).append(sum(stds) / len(stds))
            if self.greedy_first and g and g > 1 and len(values) % g == 0:
                firsts = [values[a] for a, _ in runs]
                self.values.setdefault(f"greedy/{name}", []).append(sum(firsts) / len(firsts))
            return mine

        wrapped.__name__ = name
        return wrapped

    def pop(self) -> dict[str, float]:
        out = {k: sum(v) / len(v) for k, v in self.values.items() if v}
        self.values = {}
        return out


def _whole_batch(values: list[float], columns: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    """Under several processes each scores its own rows of a GRPO batch, and a group may span processes: the
    values (and the prompt columns that group them) of every process, in process order as TRL gathers them.
    Every process calls the reward functions alike, so this collective is met by all."""
    from tagpr.training.common import distributed_state

    if distributed_state().num_processes == 1:
        return values, columns
    from accelerate.utils import gather_object

    keys = {k: list(columns[k]) for k in ("prompts", "input") if columns.get(k) is not None}
    return list(gather_object(list(values))), {k: list(gather_object(v)) for k, v in keys.items()}


def reward_functions(task: LaMPTask | str, weights: Mapping[str, float], prmu: str | Path | None = None,
                     prmu_reward: Callable[..., list[float]] | None = None,
                     label_similarity: float = 0.0) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """Reward callables and their weights for one stage: ``task`` and ``tag`` always, ``faithful`` for a task that
    rewrites its input (a positive weight elsewhere is an error), ``prmu`` when a PRMU directory (or a ready
    ``prmu_reward``) is given.  A positive ``prmu`` weight without a PRMU is an error.
    ``label_similarity``: partial task credit for a near label (classification; :class:`TaskReward`)."""
    unknown = set(weights) - set(REWARD_NAMES)
    if unknown:
        raise ValueError(f"unknown reward components {sorted(unknown)}; known: {list(REWARD_NAMES)}")
    funcs: list[Callable[..., list[float]]] = [TaskReward(task, label_similarity), TagReward(task)]
    if weights.get("faithful", 0.0) > 0 or get_task(task).rewrites_input:  # logged where it applies
        funcs.append(FaithfulReward(task))
    if prmu_reward is None and prmu is not None:
        from tagpr.prmu import PRMUReward

        prmu_reward = PRMUReward(prmu, get_task(task).name)
    if prmu_reward is not None:
        funcs.append(prmu_reward)
    elif weights.get("prmu", 0.0) > 0:
        raise ValueError("the stage weights the PRMU reward but no PRMU model was given (--prmu DIR)")
    names = [reward_name(f) for f in funcs]
    return funcs, [float(weights.get(n, 0.0)) for n in names]
