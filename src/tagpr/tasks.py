"""The task registry: every task is a short declarative YAML record, and every stage reads it from here.

A record (in the spirit of lm-evaluation-harness) names the profile fields, the answer space (a label list, a
rating scale or free text: :mod:`tagpr.scoring`'s :class:`~tagpr.scoring.AnswerSpace`, which owns the parser,
metrics and reward), how to get the retrieval query from the input, the retrieval document and prompt text of a
profile item, how the prompt is composed, the field holding the user's own output, the official question and
where the official data lives.  The built-in LaMP tasks are ``task_defs/*.yaml`` in this package; users add
their own with :func:`register_task`, :func:`include_path`, ``tagpr --include-path DIR`` or the ``TAGPR_TASKS``
environment variable (directories, ``os.pathsep``-separated).  See ``docs/tasks.md``.

Rules that a record cannot declare are code, reached through a named hook (:data:`HOOKS`; LaMP-1's insertion of
the items after the word "title"); a record may also name ``FILE.py:FUNCTION`` beside it.

The prompt and query rules follow the official LaMP code (``LaMP/prompts/prompts.py`` and
``LaMP/prompts/utils.py``); see ``docs/lamp.md`` for the deviations we document.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tagpr.recipes import StrictModel, unknown_key_message, validation_message
from tagpr.scoring import ANSWER_SPACES, LabelSet, TaskKind

BUILTIN_DIR = Path(__file__).with_name("task_defs")
ENV_VAR = "TAGPR_TASKS"


# ----------------------------------------------------------------------------------------- hooks
def _insert_after_title(source: str, items: str) -> str:
    """Official LaMP-1 ``add_string_after_title``: ``...the title, and "a", and "b" "X", which...``."""
    i = source.find("title")
    if i == -1:
        return source
    return f"{source[: i + 5]}, and {items}{source[i + 5 :]}"


HOOKS: dict[str, Callable[..., str]] = {"insert_after_title": _insert_after_title}
"""Code a record reaches by name where a rule cannot be declared: a query hook takes the input and returns the
retrieval query; a compose hook takes ``(input, joined items)`` and returns the prompt."""


def register_hook(name: str, fn: Callable[..., str]) -> None:
    """Make ``fn`` reachable from task records as ``hook: NAME``."""
    if name in HOOKS and HOOKS[name] is not fn:
        raise ValueError(f"hook {name!r} is already registered")
    HOOKS[name] = fn


def _resolve_hook(name: str, info: ValidationInfo) -> str:
    """A registered hook's name, or ``FILE.py:FUNCTION`` (relative to the record's directory) loaded and
    registered under its absolute path."""
    if name in HOOKS:
        return name
    file, sep, func = name.rpartition(":")
    if not sep or not file.endswith(".py"):
        raise ValueError(unknown_key_message(name, HOOKS).replace("key", "hook", 1)
                         + " (or FILE.py:FUNCTION beside the record)")
    base = Path((info.context or {}).get("dir") or ".")
    path = (base / file).resolve()
    key = f"{path}:{func}"
    if key not in HOOKS:
        module_name = "tagpr_hook_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except (OSError, SyntaxError, ImportError) as e:
            raise ValueError(f"hook {name!r}: cannot load {path} ({e})") from None
        fn = getattr(module, func, None)
        if not callable(fn):
            raise ValueError(f"hook {name!r}: {path} has no function {func!r}")
        HOOKS[key] = fn
    return key


class _Rule(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _HookRule(_Rule):
    rule: Literal["hook"]
    hook: str

    @field_validator("hook")
    @classmethod
    def _known(cls, name: str, info: ValidationInfo) -> str:
        return _resolve_hook(name, info)


# ------------------------------------------------------------------------------- query rules
class AfterMarker(_Rule):
    """The input after the first ``marker`` (``description:``, ``review:``, ``:``), stripped; the whole input
    when the marker is absent."""

    rule: Literal["after_marker"]
    marker: str = Field(min_length=1)

    def __call__(self, text: str) -> str:
        i = text.find(self.marker)
        return text[i + len(self.marker) :].strip() if i != -1 else text.strip()


class QuotedStrings(_Rule):
    """``count`` successive "..." strings of the input from the ``start``-th (0-based): LaMP-1's two candidate
    reference titles are the 2nd and 3rd (official ``extract_strings_between_quotes``).  With fewer, every
    quoted string; with none, the whole input."""

    rule: Literal["quoted"]
    start: int = Field(0, ge=0)
    count: int = Field(1, ge=1)

    def __call__(self, text: str) -> str:
        quoted = re.findall(r'"([^"]*)"', text)
        end = self.start + self.count
        return " ".join(quoted[self.start : end]) if len(quoted) >= end else " ".join(quoted) or text.strip()


class WholeInput(_Rule):
    """The whole input, stripped."""

    rule: Literal["whole"]

    def __call__(self, text: str) -> str:
        return text.strip()


class QueryHook(_HookRule):
    """A named hook: ``input -> query``."""

    def __call__(self, text: str) -> str:
        return HOOKS[self.hook](text)


QueryRule = Annotated[Union[AfterMarker, QuotedStrings, WholeInput, QueryHook], Field(discriminator="rule")]


# ---------------------------------------------------------------------------- compose rules
class _Compose(_Rule):
    # the official token budget: 2 tokens per ", and " between items, plus these, plus the counted words
    fixed_tokens: int = 1
    counted: str | None = None  # the fixed words the composition adds, counted in the budget

    @property
    def words(self) -> str:
        return self.counted or ""

    def overhead(self, n: int) -> int:
        """Tokens the composition of ``n`` items takes besides the items and the counted words."""
        return 2 * (n - 1) + self.fixed_tokens


class Suffix(_Compose):
    """``{items}{middle}{input}``: the items, then ``middle`` (``". "``, ``". Following the given patterns "``),
    then the input.  Counted words: ``middle`` without surrounding spaces and periods, unless given."""

    rule: Literal["suffix"]
    middle: str

    @property
    def words(self) -> str:
        return self.counted if self.counted is not None else self.middle.strip(" .")

    def __call__(self, source: str, items: str) -> str:
        return f"{items}{self.middle}{source}"


class ComposeHook(_HookRule, _Compose):
    """A named hook: ``(input, joined items) -> prompt`` (LaMP-1: ``insert_after_title``)."""

    def __call__(self, source: str, items: str) -> str:
        return HOOKS[self.hook](source, items)


ComposeRule = Annotated[Union[Suffix, ComposeHook], Field(discriminator="rule")]


class OfficialData(_Rule):
    """Where the official splits live: ``{host}/[time/]{folder}/{split}/{split}_questions.json``."""

    folder: str = Field(min_length=1)


AnswerSpaceField = Annotated[Union[ANSWER_SPACES], Field(discriminator="kind")]  # the record's ``answer:``


# ------------------------------------------------------------------------------------------ task
class LaMPTask(StrictModel):
    """One task: a validated record (the YAML keys are the aliases).  Instances live in :data:`TASKS`; use
    :func:`get_task` to look one up."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, pattern=r"^\S+$")  # canonical, e.g. "LaMP-7"
    official_id: str = ""  # as in the official golds' "task" field, e.g. "LaMP_7"; default: the name
    title: str = ""
    aliases: tuple[str, ...] = ()
    answers: AnswerSpaceField = Field(alias="answer")
    answer_hint: str = Field(min_length=1)  # how the answer must look, for prompts that add reasoning
    profile_fields: tuple[str, ...] = Field(min_length=1)  # fields every profile item must carry
    output_field: str | None = None  # the profile field holding the user's own output (label, score, text)
    query: QueryRule  # input -> retrieval query (official rule)
    document_template: str = Field(alias="document")  # profile item -> retrieval document (str.format)
    item_template: str = Field(alias="item")  # one retrieved item in the prompt; {text} is the truncated field
    truncated_field: str  # the field cut to fit the token budget
    compose: ComposeRule  # (input, joined items) -> prompt
    # the official question built from one item (str.format over its fields, ``{labels}`` = the label list);
    # None when one profile item cannot make a question (LaMP-1: items carry no cited references)
    question_template: str | None = Field(None, alias="question")
    data: OfficialData | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_official_id(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data.get("official_id") and isinstance(data.get("name"), str):
            return {**data, "official_id": data["name"]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "LaMPTask":
        fields = set(self.profile_fields)
        for key, value in (("output_field", self.output_field), ("truncated_field", self.truncated_field)):
            if value is not None and value not in fields:
                raise ValueError(f"{key} {value!r} is not one of profile_fields ({', '.join(self.profile_fields)})")
        item_extra = {"id", "date"}
        for key, template, allowed in (("document", self.document_template, fields | item_extra),
                                       ("item", self.item_template, fields | item_extra | {"text"}),
                                       ("question", self.question_template, fields | {"labels"})):
            if template is None:
                continue
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as e:
                raise ValueError(f"{key}: not a format template ({e}); write a literal brace as {{{{ or }}}}") from None
            unknown = sorted(n for n in names if n not in allowed)
            if unknown:
                raise ValueError(f"{key}: {{{unknown[0]}}} is not a profile field ({', '.join(self.profile_fields)})")
        return self

    # -------------------------------------------------------------------------- answer space
    @property
    def kind(self) -> TaskKind:
        return self.answers.kind

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.answers.labels if isinstance(self.answers, LabelSet) else None

    # --------------------------------------------------------------------------------- retrieval
    def retrieval_query(self, input_text: str) -> str:
        return self.query(input_text)

    def document(self, item: Mapping[str, object]) -> str:
        return self.document_template.format_map(_ItemView(item))

    def item_output(self, item: Mapping[str, object]) -> str:
        """What the user produced in a profile item (e.g. the tag they gave); the whole item if none."""
        if self.output_field is None:
            return self.render_item(item)
        return _ItemView(item)[self.output_field]

    @property
    def question_fields(self) -> tuple[str, ...]:
        """The item fields the official question shows (e.g. LaMP-3 ``("text",)``)."""
        if self.question_template is None:
            return ()
        names = (f for _, f, _, _ in string.Formatter().parse(self.question_template) if f)
        return tuple(dict.fromkeys(f for f in names if f != "labels"))

    @property
    def rewrites_input(self) -> bool:
        """Whether the input is itself a text of the kind the task asks for (LaMP-7: a tweet to paraphrase)
        rather than a document to write a short text for (LaMP-4/5/6: a headline, title or subject)."""
        return self.output_field is not None and self.question_fields == (self.output_field,)

    def question(self, item: Mapping[str, object]) -> str:
        """The official input that asks for this item's output (LaMP's leave-one-out construction)."""
        if self.question_template is None:
            raise ValueError(f"{self.name} has no single-item question (question_template is None)")
        view = _ItemView(item)
        view["labels"] = ", ".join(self.labels or ())
        return self.question_template.format_map(view)

    def render_item(self, item: Mapping[str, object]) -> str:
        """The item as the prompt shows it (label/score included), without truncation."""
        view = _ItemView(item)
        view["text"] = view[self.truncated_field]
        return self.item_template.format_map(view).strip()

    # ------------------------------------------------------------------------------ composition
    @property
    def compose_words(self) -> str:
        """Fixed words the composition adds (counted in the budget)."""
        return self.compose.words

    def template_overhead(self, n: int) -> int:
        return self.compose.overhead(n)

    # ------------------------------------------------------------------------------- answers
    def parse(self, output: object) -> str:
        """Untrusted model output -> the answer to score (never raises)."""
        return self.answers.parse(output)

    def metrics(self, predictions: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        """Official metrics of parsed predictions against golds."""
        return self.answers.metrics(predictions, golds)

    def reward(self, answer: object, gold: object) -> float:
        """Task reward in [0, 1] of one parsed answer (never raises)."""
        return self.answers.reward(answer, gold)

    def is_valid_answer(self, answer: str) -> bool:
        """Whether a parsed answer lies in the task's answer space (any non-empty text for generation)."""
        return self.answers.is_valid(answer)

    @property
    def primary_metric(self) -> tuple[str, bool]:
        """(metric name, higher is better)."""
        return self.answers.primary_metric


class _ItemView(dict):
    """format_map view of a profile item: missing fields render empty, values as text."""

    def __init__(self, item: Mapping[str, object]):
        super().__init__({k: "" if v is None else str(v) for k, v in item.items()})

    def __missing__(self, key: str) -> str:
        return ""


# -------------------------------------------------------------------------------------- registry
TASKS: dict[str, LaMPTask] = {}
"""Every registered task by canonical name, in registration order (the built-in ones first)."""
SOURCES: dict[str, str] = {}
"""Where each registered task's record came from (a file path, or ``<python>``)."""
_ALIASES: dict[str, str] = {}  # normalized spelling -> canonical name, kept in step with TASKS


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip()).upper()


def _spellings(task: LaMPTask) -> list[str]:
    return [_key(x) for x in (task.name, *task.aliases)]


def parse_task(record: Mapping[str, Any], where: str = "task record", base_dir: str | Path | None = None) -> LaMPTask:
    """Validate a task record (the YAML keys); one ValueError naming ``where``, the field and the problem."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: a task record is a mapping of keys (name, answer, query, ...), "
                         f"not {type(record).__name__}")
    try:
        return LaMPTask.model_validate(dict(record), context={"dir": str(base_dir) if base_dir else None})
    except ValidationError as e:
        raise ValueError(f"{where}: {validation_message(e)}") from None


def load_task_file(path: str | Path) -> LaMPTask:
    """A task from its YAML record (not registered: see :func:`register_task`)."""
    import yaml

    p = Path(path)
    try:
        record = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{p}: cannot read the task record ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    return parse_task(record, str(p), p.parent)


def register_task(record: LaMPTask | Mapping[str, Any] | str | os.PathLike, replace: bool = False) -> LaMPTask:
    """Add a task to the registry: a :class:`LaMPTask`, a record mapping (the YAML keys) or a YAML file's path.

    Its name and aliases must not be taken by another task; registering the same record again is a no-op, and
    ``replace=True`` replaces the task of the same name.  Returns the registered task."""
    if isinstance(record, (str, os.PathLike)):
        task, source = load_task_file(record), str(record)
    elif isinstance(record, LaMPTask):
        task, source = record, "<python>"
    else:
        task, source = parse_task(record), "<python>"
    old = TASKS.get(task.name)
    if old is not None and old == task:  # the same record again (a directory included twice): nothing changes
        return old
    if old is not None and not replace:
        raise ValueError(f"{source}: task {task.name} is already registered (from {SOURCES[task.name]}); "
                         "give it another name, or replace=True")
    for spelling, shown in zip(_spellings(task), (task.name, *task.aliases)):
        owner = _ALIASES.get(spelling)
        if owner is not None and owner != task.name:
            raise ValueError(f"{source}: {task.name}'s name or alias {shown!r} already names {owner} "
                             f"(from {SOURCES[owner]})")
    for spelling in _spellings(old) if old is not None else ():
        del _ALIASES[spelling]
    TASKS[task.name], SOURCES[task.name] = task, source
    _ALIASES.update(dict.fromkeys(_spellings(task), task.name))
    return task


def include_path(*paths: str | os.PathLike) -> list[LaMPTask]:
    """Register every task record (``*.yaml``, ``*.yml``, searched recursively) in each directory, or the record
    files named; returns the tasks in the order registered."""
    out = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        elif p.is_file():
            files = [p]
        else:
            raise ValueError(f"{p}: no such task directory or record file")
        out += [register_task(f) for f in files]
    return out


def env_paths(value: str | None = None) -> list[str]:
    """The directories that ``TAGPR_TASKS`` names (``os.pathsep``-separated)."""
    value = os.environ.get(ENV_VAR, "") if value is None else value
    return [p for p in value.split(os.pathsep) if p.strip()]


def get_task(name: str | LaMPTask) -> LaMPTask:
    """Look a task up by any accepted spelling: ``LaMP-7``, ``LaMP_7``, ``lamp7``, ``LaMP-2M``..."""
    if isinstance(name, LaMPTask):
        return name
    key = _key(str(name))
    if key not in _ALIASES:
        key = re.sub(r"^LAMP-?(\d)", r"LAMP-\1", key)
    if key not in _ALIASES:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)} (add your own with --include-path DIR "
                       f"or {ENV_VAR}; see docs/tasks.md)")
    return TASKS[_ALIASES[key]]


def load_task(name: str | os.PathLike | LaMPTask) -> LaMPTask:
    """A registered task by any spelling (:func:`get_task`), or the task of a YAML record file (a path ending in
    ``.yaml``/``.yml``, or an existing file): registered (:func:`register_task`), then returned."""
    if isinstance(name, os.PathLike) or (isinstance(name, str) and (name.endswith((".yaml", ".yml")) or Path(name).is_file())):
        return register_task(name)
    return get_task(name)


def task_names() -> list[str]:
    return list(TASKS)


include_path(BUILTIN_DIR)
MOVIE_TAGS: tuple[str, ...] = TASKS["LaMP-2"].answers.labels
NEWS_CATEGORIES: tuple[str, ...] = TASKS["LaMP-2N"].answers.labels
for _path in env_paths():  # users' own tasks, in every process (accelerate launch's too)
    include_path(_path)
