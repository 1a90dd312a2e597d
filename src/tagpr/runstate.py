"""What resumable jobs (evaluation runs, chain builds) share: cutting a line a kill left half-written, and a
progress bar that starts from the work already done."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def truncate_partial_line(path: Path) -> None:
    """Drop a trailing line without newline (the write a kill interrupted)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(cut)


class ProgressBar:
    """A rich progress bar as a context manager yielding ``advance(n)``; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, completed: int, label: str):
        self.enabled, self.total, self.completed, self.label = enabled, total, completed, label
        self._p = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._p.__enter__()
        tid = self._p.add_task(self.label, total=self.total, completed=self.completed)
        return lambda n: self._p.advance(tid, n)

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
