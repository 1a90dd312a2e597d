"""What resumable jobs (evaluation runs, chain builds) share: the one JSONL reader, cutting a line a kill left
half-written, and a progress bar that starts from the work already done."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def iter_jsonl(path: str | Path, required: Sequence[str] = (), tolerant: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line of a JSONL file.

    ``tolerant`` is for a job's own append-only log: a line that is not a JSON object, or lacks a ``required``
    field (the write a kill cut short), is skipped, and a missing file has no records.  Otherwise the file is
    user input: such a line is a ValueError naming the file, the line, the example id and the field."""
    p = Path(path)
    if tolerant and not p.exists():
        return
    try:
        fh = open(p, encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such file") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if tolerant:
                    continue
                raise ValueError(f"{p}, line {n}: not JSON") from None
            if not isinstance(rec, dict):
                if tolerant:
                    continue
                raise ValueError(f"{p}, line {n}: not a JSON object")
            missing = next((k for k in required if k not in rec), None)
            if missing is not None:
                if tolerant:
                    continue
                raise ValueError(f"{p}, line {n}, example id={rec.get('id')!r}: missing field {missing!r}")
            yield n, rec


def read_jsonl(path: str | Path, required: Sequence[str] = (), tolerant: bool = False) -> list[dict[str, Any]]:
    """The records of :func:`iter_jsonl`."""
    return [rec for _, rec in iter_jsonl(path, required, tolerant)]


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
