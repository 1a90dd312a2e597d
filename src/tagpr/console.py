"""A console a person can follow: library progress bars, per-step log dicts and deprecation warnings off.

``tagpr run`` prints one line per stage (and its time); the libraries it drives (transformers, datasets,
TRL, the GGUF reader) would otherwise print bars for loading weights, converting tensors and writing shards,
the Trainer's log dict each step, and FutureWarnings about their own internals.  ``--verbose`` keeps them."""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def quiet_libraries() -> None:
    """Silence library progress bars, info logs and Future/Deprecation warnings for this process."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*(gradient checkpointing|use_cache=True|past_key_values).*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - a dependency
        pass
    for name in ("transformers", "datasets", "trl", "accelerate", "peft", "sentence_transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def without_log_printer(trainer: object) -> None:
    """Drop the per-step printing of the Trainer's log dict (with progress bars off it prints each one; the
    values stay in ``log_history`` and the run's files)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # type: ignore[attr-defined]


def table_console(stderr: bool = False) -> Console:
    """A console for result tables: the terminal's width in a terminal, else 100 columns (rich's 80-column
    default for pipes and log files wrapped method names such as "tagpr: rl exploratory" over three lines)."""
    from rich.console import Console

    term = Console(stderr=stderr)
    return Console(stderr=stderr, width=term.width if term.is_terminal else 100)
