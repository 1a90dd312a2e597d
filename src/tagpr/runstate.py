"""What resumable jobs (evaluation runs, chain builds, RL runs, ``tagpr run``) share: the one JSONL reader, the
run directory (:class:`RunDir`: its settings and their identity, append-only JSONL logs whose torn last line is cut,
atomic JSON writes), and a progress bar that starts from the work already done.

Every long job resumes by default; ``overwrite=True`` (``--overwrite``) discards what the directory holds."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a kill leaves the old file or the new one."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, p)


def write_json(path: str | Path, obj: Any, indent: int | None = 2, ensure_ascii: bool = True) -> None:
    """``obj`` as JSON at ``path``, atomically (:func:`write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii))


def dump_jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    """JSONL text: one line per record."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


class RunMismatchError(ValueError):
    """A run directory holds a run with other settings."""


class RunDir:
    """A resumable job's files: ``settings`` (a JSON file of the job's pydantic settings), append-only JSONL logs
    and JSON results, all below ``root``.

    Starting a job (:meth:`start`) checks that settings saved by an earlier start have the same identity (what
    must match for the work done to count) and refuses otherwise; ``overwrite`` first discards ``outputs`` (file
    or directory names below ``root``; ``("*",)``: the whole directory, when it holds this kind of job).

    For the whole directory, ``owns`` are glob patterns of the top-level entries the job writes (an entry matching
    none makes ``--overwrite`` refuse: it is not the job's to delete), and ``markers`` patterns of entries that
    show the directory holds this kind of job even without its settings file (a run saved before the file
    existed, or killed before writing it)."""

    def __init__(self, root: str | Path, settings: str = "config.json", outputs: Sequence[str] = (),
                 what: str = "a run", owns: Sequence[str] = (), markers: Sequence[str] = ()):
        self.root = Path(root)
        self.settings_path = self.root / settings
        self.outputs = tuple(outputs)
        self.what = what
        self.owns = (settings, *owns, "*.tmp") if owns else ()
        self.markers = (settings, *markers)

    def file(self, name: str) -> Path:
        return self.root / name

    # ------------------------------------------------------------------------------ settings
    def saved_settings(self) -> dict[str, Any] | None:
        """The settings an earlier start saved (None when there are none)."""
        if not self.settings_path.exists():
            return None
        return json.loads(self.settings_path.read_text(encoding="utf-8"))

    def check_identity(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """RunMismatchError naming the settings that differ (saved value, new value)."""
        if dict(old) != dict(new):
            diff = {k: (old.get(k), new.get(k)) for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)}
            raise RunMismatchError(f"{self.root} holds {self.what} with other settings {diff}; "
                                   "use another --out or --overwrite")

    def _marked(self) -> bool:
        return any(any(self.root.glob(m)) for m in self.markers)

    def check_discard(self, inputs: Iterable[str | Path | None] = ()) -> None:
        """ValueError when discarding would delete more than this job's own earlier run: an input of the job
        (``inputs``: its model, chains, PRMU, data paths) inside the directory, files of something else, or
        entries the job does not write (``owns``)."""
        if not self.root.is_dir():
            return
        whole = self.outputs == ("*",)
        entries = sorted(e.name for e in self.root.iterdir())
        if whole and entries and not self._marked():
            raise ValueError(f"{self.root} holds files but not {self.what} (no {self.settings_path.name}); "
                             "--overwrite deletes only a run of its own: use another --out")
        names = ("",) if whole else (*self.outputs, self.settings_path.name)
        targets = [(self.root / n).resolve() for n in names]
        for given in inputs:
            if given is None or not Path(given).exists():
                continue
            p = Path(given).resolve()
            if any(p == t or t in p.parents for t in targets):
                raise ValueError(f"--overwrite would delete {given}, an input of this job inside {self.root}: "
                                 "use another --out")
        if whole and self.owns:
            foreign = [e for e in entries if not any(fnmatch.fnmatch(e, pat) for pat in self.owns)]
            if foreign:
                raise ValueError(f"{self.root} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                                 f"not written by {self.what}; --overwrite deletes only a run of its own: "
                                 "move them or use another --out")

    def discard(self, inputs: Iterable[str | Path | None] = ()) -> None:
        """Remove the outputs and the saved settings, after :meth:`check_discard`.  A whole directory (``("*",)``)
        goes only when it holds this job's run and nothing else: ``--overwrite`` on the wrong ``--out`` deletes
        nothing."""
        self.check_discard(inputs)
        if self.outputs == ("*",):
            if self.root.is_dir():
                shutil.rmtree(self.root)
            return
        for name in (*self.outputs, self.settings_path.name):
            p = self.root / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def save_settings(self, settings: Any) -> None:
        """The settings (a pydantic model) as the directory's settings file, atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.settings_path, settings.model_dump_json(indent=2))

    def start(self, settings: Any, identity: Callable[[Any], Mapping[str, Any]], overwrite: bool = False,
              load: Callable[[dict[str, Any]], Any] | None = None, main: bool = True,
              barrier: Callable[[], None] | None = None, inputs: Iterable[str | Path | None] = ()) -> None:
        """Discard (``overwrite``; ``inputs`` as for :meth:`check_discard`) or check the saved settings against
        ``settings`` (their ``identity``), then save them.  ``load`` reads saved settings (default: ``settings``'
        model class, so a setting added since takes its default).  Under several processes (``accelerate launch``) only the ``main`` one deletes and writes, and
        ``barrier`` makes every process wait for it."""
        wait = barrier or (lambda: None)
        if overwrite and main:
            self.discard(inputs)
        wait()
        saved = self.saved_settings()
        if saved is not None:
            old = (load or type(settings).model_validate)(saved)
            self.check_identity(identity(old), identity(settings))
        wait()  # every process has checked the directory before the main one writes the settings into it
        if main:
            self.save_settings(settings)

    # ------------------------------------------------------------------------------ logs
    def records(self, name: str, key: str = "id") -> dict[str, dict[str, Any]]:
        """The records of a log by ``key`` (a line a kill cut short is ignored: its work is redone)."""
        return {str(rec[key]): rec for rec in read_jsonl(self.file(name), (key,), tolerant=True)}

    @contextmanager
    def appending(self, name: str) -> Iterator[Callable[[Iterable[Mapping[str, Any]]], None]]:
        """``append(records)`` for a log: the torn last line of a killed write is cut first; each call is
        flushed to disk, so a kill loses at most the records in flight."""
        path = self.file(name)
        if path.exists():
            truncate_partial_line(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            def append(records: Iterable[Mapping[str, Any]]) -> None:
                fh.write(dump_jsonl(records))
                fh.flush()
                os.fsync(fh.fileno())

            yield append

    def rewrite(self, name: str, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace a log with ``records``, atomically."""
        write_atomic(self.file(name), dump_jsonl(records))

    def write_json(self, name: str, obj: Any, indent: int | None = 2, ensure_ascii: bool = True) -> Path:
        """A JSON result below the root, atomically; returns its path."""
        path = self.file(name)
        write_json(path, obj, indent, ensure_ascii)
        return path


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
