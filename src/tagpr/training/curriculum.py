"""A curriculum for RL on small compute: train a stage on the prompts its starting policy *sometimes* solves.

GRPO learns nothing from a group whose completions all earn the same reward (all right or all wrong): the
advantages are zero.  On a CPU budget of a few steps, a stage spent on such prompts is a stage lost.
:func:`screen_rows` samples ``samples`` completions of each prompt of a pool from the stage's starting model
(CTranslate2 on a CPU, or any generation backend), scores them with the task reward, and keeps the prompts
whose completions disagree (some reward spread): the ones the policy sometimes solves.  When fewer than
``min_rows`` prompts qualify, the rest of the pool follows them, nearest to the middle first, so the stage
always has data.  The screening costs ``pool x samples`` sampled completions, paid once per stage, and is
recorded in the stage's ``curriculum.json``, which a resumed stage reuses.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tagpr.generation import SamplingParams, close_backend
from tagpr.runstate import write_json
from tagpr.training.rewards import TaskReward

CURRICULA = ("none", "screen")


def screen_rows(rows: Sequence[dict[str, Any]], task: str, generate: Callable[[list[Any], SamplingParams], Any],
                samples: int = 4, pool: int = 64, min_rows: int = 1, temperature: float = 1.0,
                max_new_tokens: int = 256, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows to train on, report).  ``generate(prompts, params)`` is a backend's ``generate`` (lists of
    :class:`~tagpr.generation.Generation`, ``params.n`` per prompt)."""
    if samples < 2:
        raise ValueError(f"curriculum screening needs at least 2 samples a prompt, got {samples}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    picked = order[:pool]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=samples, seed=seed)
    gens = generate([rows[i]["prompt"] for i in picked], params)
    reward = TaskReward(task)
    means, spreads = {}, {}
    for i, group in zip(picked, gens):
        values = reward([g.text for g in group], gold=[rows[i]["gold"]] * len(group))
        means[i], spreads[i] = statistics.fmean(values), statistics.pstdev(values)
    informative = [i for i in picked if spreads[i] > 1e-9]
    rest = sorted((i for i in picked if spreads[i] <= 1e-9), key=lambda i: abs(means[i] - 0.5))
    chosen = informative + rest[: max(0, min_rows - len(informative))]
    report = {"screened": len(picked), "samples": samples, "informative": len(informative),
              "share_informative": len(informative) / len(picked) if picked else 0.0,
              "always_solved": sum(1 for i in picked if spreads[i] <= 1e-9 and means[i] >= 1 - 1e-9),
              "never_solved": sum(1 for i in picked if spreads[i] <= 1e-9 and means[i] <= 1e-9),
              "kept": len(chosen), "ids": [str(rows[i].get("id", i)) for i in chosen]}
    return [rows[i] for i in chosen], report


def stage_rows(rows: Sequence[dict[str, Any]], sdir: Path, task: str, model: str | None, *, samples: int, pool: int,
               min_rows: int, temperature: float, max_new_tokens: int, seed: int,
               make: Callable[[str | None], Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The screened rows of a stage: read from ``sdir/curriculum.json`` when a (killed) stage already screened,
    else screened now with a backend made by ``make(model)`` (default: the CPU/GPU default backend).

    Under several processes the main one screens and writes the file, and the others read it: every process
    trains on the same rows, in the same order (the report's ``ids``)."""
    from tagpr.training.common import is_main_process, wait_for_everyone

    path = sdir / "curriculum.json"
    found = _read_screened(path, rows)
    wait_for_everyone()  # every process has read the file before the main one may write it
    if found is not None:
        return found
    if not is_main_process():
        wait_for_everyone()  # the main process screens
        found = _read_screened(path, rows)
        if found is None:
            raise RuntimeError(f"{path}: the main process wrote no screening for this stage")
        return found
    if make is None:
        from tagpr.generation import make_backend

        def make(m: str | None) -> Any:
            return make_backend("auto", m)

    backend = make(model)
    try:
        kept, report = screen_rows(rows, task, backend.generate, samples=samples, pool=pool, min_rows=min_rows,
                                   temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    finally:
        close_backend(backend)
    sdir.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    wait_for_everyone()  # the file is complete for the other processes
    return kept, report


def _read_screened(path: Path, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The rows a stage's ``curriculum.json`` kept, in its order (None without the file, or when ``rows`` lack one
    of its ids)."""
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    by_id: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_id.setdefault(str(r.get("id")), r)
    if not all(str(i) in by_id for i in report["ids"]):
        return None
    return [by_id[str(i)] for i in report["ids"]], report
