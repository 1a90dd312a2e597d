"""Shared helpers for the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_LAMP = Path(os.environ.get("TAGPR_SHARED", REPO.parent / "shared")) / "data" / "lamp"


def lamp7_examples(n: int | None = None):
    """The shared LaMP-7 dev examples (the first ``n``), or None when ../shared is absent."""
    from tagpr.data.loading import load_split

    if not (SHARED_LAMP / "LaMP_7" / "dev_questions.json").exists():
        return None
    exs = load_split(SHARED_LAMP, "LaMP-7", "dev", require_golds=True)
    return exs[:n] if n else exs


def step_clock(times: list[float]):
    """A Trainer callback appending each optimizer step's wall time (seconds) to ``times``."""
    import time

    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    return StepClock()
