"""Trivial floors: answers from a rule, no model, evaluated like any method (``tagpr eval --method NAME``,
``run.baselines`` in a recipe), so a comparison table carries them as rows with paired intervals.

* ``copy-input``: the input's own text (tasks whose input is the text to rewrite, LaMP-7: the floor every
  paraphrase must beat; ROUGE-1 0.4638 on the 989 shared real LaMP-7 examples);
* ``majority``: one answer for everyone, the most frequent output over every profile item of the split
  (label and rating tasks; "5" on real LaMP-3, MAE 0.496: the profile-blind floor);
* ``user-majority``: the user's own most frequent output (label and rating tasks; MAE 0.392 on the 240
  shared real LaMP-3 questions: the profile-aware rule a personalised model should approach).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from tagpr.data.loading import Example
from tagpr.tasks import LaMPTask, get_task

FLOORS = ("copy-input", "majority", "user-majority")


def _outputs(task: LaMPTask, profile: Sequence[dict]) -> Counter:
    """The parsed outputs of profile items, counted (first seen first among equals)."""
    counts: Counter = Counter()
    for item in profile:
        try:
            answer = task.parse(task.item_output(item))
        except (KeyError, TypeError, ValueError):
            continue
        if task.is_valid_answer(answer):
            counts[answer] += 1
    return counts


def floor_rule(name: str, task: LaMPTask | str, examples: Sequence[Example]) -> Callable[[Example], str]:
    """The rule ``name`` for ``task``; ``examples`` (the split evaluated) give ``majority`` its answer.
    ValueError naming the rule and the task when the rule does not apply to it."""
    t = get_task(task)
    if name not in FLOORS:
        raise ValueError(f"unknown floor {name!r}; choose from {', '.join(FLOORS)}")
    if name == "copy-input":
        if not t.rewrites_input:
            raise ValueError(f"copy-input is a floor only for tasks whose input is the text to rewrite (LaMP-7), "
                             f"not {t.name}")
        return lambda e: t.retrieval_query(e.input)
    if not t.answers.closed:
        raise ValueError(f"{name} is a floor for label and rating tasks, not {t.name} ({t.kind})")
    overall = Counter()
    for e in examples:
        overall.update(_outputs(t, e.profile))
    fallback = overall.most_common(1)[0][0] if overall else t.answers.default_answer()
    if name == "majority":
        return lambda e: fallback

    def user_majority(e: Example) -> str:
        counts = _outputs(t, e.profile)
        return counts.most_common(1)[0][0] if counts else fallback

    return user_majority
