"""Loading and validating official-format LaMP files.

Questions: a JSON list of ``{"id", "input", "profile": [item, ...]}`` (time-based splits add
``user_id`` to examples and ``date`` to items).  Outputs: ``{"task": "LaMP_N", "golds": [{"id",
"output"}]}`` or a bare list of ``{"id", "output"}``.  Every problem is reported as one
:class:`LaMPDataError` naming the file, the example id and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagpr.tasks import LaMPTask, get_task


class LaMPDataError(ValueError):
    """A LaMP data file is malformed.  ``str(err)`` names the file, example id and field."""

    def __init__(self, path: str | Path, message: str, example_id: str | None = None, field: str | None = None):
        self.path = str(path)
        self.example_id = example_id
        self.field = field
        where = [self.path]
        if example_id is not None:
            where.append(f"example id={example_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join([', '.join(where), message])}")


@dataclass
class Example:
    """One LaMP example: a user's input and that user's profile (history)."""

    id: str
    input: str
    profile: list[dict[str, Any]]
    user_id: str | None = None
    gold: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def profile_key(self) -> str:
        """A key for per-user caches: the user id when known, else the example id."""
        return f"user:{self.user_id}" if self.user_id is not None else f"example:{self.id}"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "input": self.input, "profile": self.profile}
        if self.user_id is not None:
            d["user_id"] = self.user_id
        d.update(self.extra)
        return d


# ------------------------------------------------------------------------------------------ reading
def read_json(path: str | Path) -> Any:
    """Read a JSON file with errors that say what the file actually is."""
    p = Path(path)
    if not p.exists():
        raise LaMPDataError(p, "file not found")
    raw = p.read_bytes()
    head = raw[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (head.startswith(b"<") and b"html" in head):
        raise LaMPDataError(p, "this is an HTML page, not JSON (a wrong download URL answers with a web page)")
    if not raw.strip():
        raise LaMPDataError(p, "file is empty")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise LaMPDataError(p, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise LaMPDataError(p, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def _as_id(value: Any, path: Path, index: int, field_name: str = "id") -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        shown = f"entry #{index}"
        raise LaMPDataError(path, f"{shown}: id must be a string (got {type(value).__name__})", None, field_name)
    return str(value)


def parse_questions(data: Any, path: str | Path, task: LaMPTask | str | None = None) -> list[Example]:
    """Validate parsed questions JSON; ``task`` (when given) checks each item's required fields."""
    p = Path(path)
    t = get_task(task) if task is not None else None
    if isinstance(data, Mapping):
        raise LaMPDataError(p, "expected a JSON list of examples, got an object (is this an outputs file?)")
    if not isinstance(data, list):
        raise LaMPDataError(p, f"expected a JSON list of examples, got {type(data).__name__}")
    if not data:
        raise LaMPDataError(p, "no examples in file")
    examples: list[Example] = []
    seen: set[str] = set()
    for i, ex in enumerate(data):
        if not isinstance(ex, Mapping):
            raise LaMPDataError(p, f"entry #{i} is a {type(ex).__name__}, expected an object")
        if "id" not in ex:
            raise LaMPDataError(p, f"entry #{i} has no id", None, "id")
        ex_id = _as_id(ex["id"], p, i)
        if ex_id in seen:
            raise LaMPDataError(p, "duplicate example id", ex_id, "id")
        seen.add(ex_id)
        inp = ex.get("input", ex.get("question"))  # some public copies name the input "question"
        if inp is None:
            raise LaMPDataError(p, "missing field", ex_id, "input")
        if not isinstance(inp, str):
            raise LaMPDataError(p, f"must be a string, got {type(inp).__name__}", ex_id, "input")
        if "profile" not in ex:
            raise LaMPDataError(p, "missing field", ex_id, "profile")
        profile = ex["profile"]
        if not isinstance(profile, list):
            raise LaMPDataError(p, f"must be a list of items, got {type(profile).__name__}", ex_id, "profile")
        if not profile:
            raise LaMPDataError(p, "empty profile (LaMP examples always carry the user's history)", ex_id, "profile")
        items = []
        for j, item in enumerate(profile):
            if not isinstance(item, Mapping):
                raise LaMPDataError(p, f"item #{j} is a {type(item).__name__}, expected an object", ex_id, f"profile[{j}]")
            if t is not None:
                for f in t.profile_fields:
                    if f not in item:
                        raise LaMPDataError(p, f"missing field required by {t.name}", ex_id, f"profile[{j}].{f}")
                    v = item[f]
                    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                        raise LaMPDataError(p, f"must be text, got {type(v).__name__}", ex_id, f"profile[{j}].{f}")
            items.append(dict(item))
        user_id = ex.get("user_id")
        extra = {k: v for k, v in ex.items() if k not in ("id", "input", "question", "profile", "user_id")}
        examples.append(Example(ex_id, inp, items, None if user_id is None else str(user_id), None, extra))
    return examples


def parse_golds(data: Any, path: str | Path, task: LaMPTask | str | None = None) -> dict[str, str]:
    """Validate parsed outputs JSON (``{task, golds}`` or a bare list) -> ``{id: output}``."""
    p = Path(path)
    if isinstance(data, Mapping):
        if "golds" not in data:
            raise LaMPDataError(p, "an outputs object needs a 'golds' list", None, "golds")
        file_task = data.get("task")
        if task is not None and file_task is not None:
            want = get_task(task)
            if _task_number(str(file_task)) != _task_number(want.official_id):
                raise LaMPDataError(p, f"file is for {file_task!r}, not {want.name}", None, "task")
        golds = data["golds"]
    else:
        golds = data
    if not isinstance(golds, list):
        raise LaMPDataError(p, f"expected a list of {{id, output}}, got {type(golds).__name__}", None, "golds")
    out: dict[str, str] = {}
    for i, g in enumerate(golds):
        if not isinstance(g, Mapping):
            raise LaMPDataError(p, f"entry #{i} is a {type(g).__name__}, expected an object", None, "golds")
        if "id" not in g:
            raise LaMPDataError(p, f"entry #{i} has no id", None, "id")
        gid = _as_id(g["id"], p, i)
        if "output" not in g:
            raise LaMPDataError(p, "missing field", gid, "output")
        if not isinstance(g["output"], (str, int, float)) or isinstance(g["output"], bool):
            raise LaMPDataError(p, f"must be a string, got {type(g['output']).__name__}", gid, "output")
        if gid in out:
            raise LaMPDataError(p, "duplicate id", gid, "id")
        out[gid] = str(g["output"])
    return out


def _task_number(s: str) -> str:
    m = re.search(r"(\d)", s)
    return m.group(1) if m else s


def load_questions(path: str | Path, task: LaMPTask | str | None = None) -> list[Example]:
    return parse_questions(read_json(path), path, task)


def load_golds(path: str | Path, task: LaMPTask | str | None = None) -> dict[str, str]:
    return parse_golds(read_json(path), path, task)


def split_files(data_dir: str | Path, task: LaMPTask | str, split: str) -> tuple[Path, Path]:
    """Where a split's questions/outputs live: ``DIR/{split}_questions.json`` or ``DIR/LaMP_N/...``."""
    t = get_task(task)
    d = Path(data_dir)
    candidates = [d, d / t.official_id, d / t.name, d / t.name.replace("-", "_")]
    for c in candidates:
        q = c / f"{split}_questions.json"
        if q.exists():
            return q, c / f"{split}_outputs.json"
    raise LaMPDataError(
        d / f"{split}_questions.json",
        f"no {split} questions for {t.name} (looked in: {', '.join(str(c) for c in candidates)})",
    )


def load_split(
    data_dir: str | Path, task: LaMPTask | str, split: str, require_golds: bool = False
) -> list[Example]:
    """Load a split and attach golds when the outputs file exists (test golds are withheld)."""
    q_path, o_path = split_files(data_dir, task, split)
    examples = load_questions(q_path, task)
    if o_path.exists():
        attach_golds(examples, load_golds(o_path, task), q_path, o_path)
    elif require_golds:
        raise LaMPDataError(o_path, "outputs file not found (needed for scoring)")
    return examples


def attach_golds(examples: Sequence[Example], golds: Mapping[str, str], q_path: str | Path, o_path: str | Path) -> None:
    ids = {e.id for e in examples}
    missing = [e.id for e in examples if e.id not in golds]
    if missing:
        raise LaMPDataError(o_path, f"no gold for {len(missing)} question(s) of {q_path}", missing[0], "id")
    extra = sorted(set(golds) - ids)
    if extra:
        raise LaMPDataError(o_path, f"{len(extra)} gold(s) match no question in {q_path}", extra[0], "id")
    for e in examples:
        e.gold = golds[e.id]


def write_examples(examples: Sequence[Example], data_dir: str | Path, task: LaMPTask | str, split: str) -> tuple[Path, Path]:
    """Write examples in the official format (questions + outputs when golds are set)."""
    t = get_task(task)
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    q = d / f"{split}_questions.json"
    o = d / f"{split}_outputs.json"
    q.write_text(json.dumps([e.to_json() for e in examples], ensure_ascii=False, indent=1))
    if all(e.gold is not None for e in examples):
        golds = {"task": t.official_id, "golds": [{"id": e.id, "output": e.gold} for e in examples]}
        o.write_text(json.dumps(golds, ensure_ascii=False, indent=1))
    return q, o


def predictions_json(task: LaMPTask | str, predictions: Mapping[str, str]) -> dict[str, Any]:
    """Predictions in the official golds shape."""
    t = get_task(task)
    return {"task": t.official_id, "golds": [{"id": k, "output": v} for k, v in predictions.items()]}
