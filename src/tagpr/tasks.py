"""The LaMP task registry: each task is defined once, here, and every stage reads it from here.

A :class:`LaMPTask` is a small declarative record (in the spirit of lm-evaluation-harness): profile
fields, label set, how to get the retrieval query from the input, the retrieval document text of a
profile item, the official prompt template of a retrieved item, and the kind of answer (which fixes
the parser, metrics and reward in :mod:`tagpr.scoring`).

The prompt and query rules follow the official LaMP code (``LaMP/prompts/prompts.py`` and
``LaMP/prompts/utils.py``); see ``docs/lamp.md`` for the deviations we document.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tagpr import scoring
from tagpr.scoring import TaskKind

MOVIE_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
    "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
    "violence", "true story",
)  # fmt: skip
NEWS_CATEGORIES = (
    "women", "religion", "politics", "style & beauty", "entertainment", "culture & arts", "sports",
    "science & technology", "travel", "business", "crime", "education", "healthy living", "parents",
    "food & drink",
)  # fmt: skip
RATINGS = ("1", "2", "3", "4", "5")

# The official questions (LaMP's data-creation code): the user's own item put into the task's input
# form; ``{labels}`` is the task's label list, other names are the item's fields.
_Q_MOVIE = ("Which tag does this movie relate to among the following tags? Just answer with the tag name without "
            "further explanation. tags: [{labels}] description: {description}")
_Q_NEWS = ("Which category does this article relate to among the following categories? Just answer with the category "
           "name without further explanation. categories: [{labels}] article: {text}")
_Q_RATING = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
             "without further explanation. review: {text}")


# ------------------------------------------------------------------------ official query extraction
def _after_marker(marker: str) -> Callable[[str], str]:
    def extract(text: str) -> str:
        i = text.find(marker)
        return text[i + len(marker) :].strip() if i != -1 else text.strip()

    extract.__name__ = f"after_{marker.strip(':').replace(' ', '_')}"
    return extract


def _after_first_colon(text: str) -> str:
    i = text.find(":")
    return text[i + 1 :].strip() if i != -1 else text.strip()


def _quoted_strings(text: str) -> list[str]:
    """Official ``extract_strings_between_quotes``: contents of successive "..." pairs."""
    return re.findall(r'"([^"]*)"', text)


def _citation_query(text: str) -> str:
    """LaMP-1: the two candidate reference titles (2nd and 3rd quoted strings of the input)."""
    quoted = _quoted_strings(text)
    return " ".join(quoted[1:3]) if len(quoted) >= 3 else " ".join(quoted) or text.strip()


# ------------------------------------------------------------------------------- prompt composition
def _insert_after_title(source: str, items: str) -> str:
    """Official LaMP-1 ``add_string_after_title``: ``...the title, and "a", and "b" "X", which...``."""
    i = source.find("title")
    if i == -1:
        return source
    return f"{source[: i + 5]}, and {items}{source[i + 5 :]}"


def _suffix_compose(middle: str) -> Callable[[str, str], str]:
    def compose(source: str, items: str) -> str:
        return f"{items}{middle}{source}"

    return compose


@dataclass(frozen=True)
class LaMPTask:
    """One LaMP task.  Instances live in :data:`TASKS`; use :func:`get_task` to look one up."""

    name: str  # canonical, e.g. "LaMP-7"
    official_id: str  # as in the official golds' "task" field, e.g. "LaMP_7"
    title: str
    kind: TaskKind
    profile_fields: tuple[str, ...]  # fields every profile item must carry (besides optional id/date)
    query_fn: Callable[[str], str]  # input -> retrieval query (official rule)
    document_template: str  # profile item -> retrieval document, str.format over item fields
    item_template: str  # one retrieved item in the prompt; {text} is the truncated field
    truncated_field: str  # the field cut to fit the token budget
    compose_fn: Callable[[str, str], str]  # (input, joined items) -> prompt
    compose_words: str = ""  # fixed words the composition adds (counted in the budget)
    template_overhead: Callable[[int], int] = field(default=lambda n: 2 * (n - 1) + 1)
    labels: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    answer_hint: str = ""  # how the answer must look, for prompts that add reasoning (RRP, TagPR)
    output_field: str | None = None  # the profile field holding the user's own output (label, score, title, text)
    # the official question built from one item (str.format over its fields, ``{labels}`` = the label list);
    # None when one profile item cannot make a question (LaMP-1: items carry no cited references)
    question_template: str | None = None

    # --------------------------------------------------------------------------------- retrieval
    def retrieval_query(self, input_text: str) -> str:
        return self.query_fn(input_text)

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

    # ------------------------------------------------------------------------------- answers
    def parse(self, output: object) -> str:
        """Untrusted model output -> the answer to score (never raises)."""
        return scoring.parse_answer(output, self.kind, self.labels)

    def metrics(self, predictions: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        """Official LaMP metrics of parsed predictions against golds."""
        return scoring.compute_metrics(self.kind, predictions, golds, self.labels)

    def reward(self, answer: object, gold: object) -> float:
        """Task reward in [0, 1] of one parsed answer (never raises)."""
        return scoring.task_reward(answer, gold, self.kind, self.labels)

    def is_valid_answer(self, answer: str) -> bool:
        """Whether a parsed answer lies in the task's answer space (any non-empty text for generation)."""
        a = answer.strip()
        if self.kind == "classification":
            return a in (self.labels or ())
        if self.kind == "rating":
            try:
                return 1.0 <= float(a) <= 5.0
            except ValueError:
                return False
        return bool(a)

    @property
    def primary_metric(self) -> tuple[str, bool]:
        """(metric name, higher is better)."""
        return scoring.PRIMARY_METRIC[self.kind]


class _ItemView(dict):
    """format_map view of a profile item: missing fields render empty, values as text."""

    def __init__(self, item: Mapping[str, object]):
        super().__init__({k: "" if v is None else str(v) for k, v in item.items()})

    def __missing__(self, key: str) -> str:
        return ""


TASKS: dict[str, LaMPTask] = {}


def _register(task: LaMPTask) -> LaMPTask:
    TASKS[task.name] = task
    return task


_register(LaMPTask(
    name="LaMP-1", official_id="LaMP_1", title="Personalized citation identification",
    kind="classification", labels=("[1]", "[2]"), profile_fields=("title", "abstract"),
    query_fn=_citation_query, document_template="{title} {abstract}",
    item_template='"{text}"', truncated_field="title", compose_fn=_insert_after_title,
    template_overhead=lambda n: 2 * n, answer_hint="[1] or [2]",
))  # fmt: skip
_register(LaMPTask(
    name="LaMP-2", output_field="tag", official_id="LaMP_2", title="Personalized movie tagging",
    kind="classification", labels=MOVIE_TAGS, profile_fields=("description", "tag"),
    query_fn=_after_marker("description:"), document_template="{description}",
    item_template='the tag for the movie: "{text}" is "{tag}" ', truncated_field="description",
    compose_fn=_suffix_compose(". "), aliases=("LaMP-2M", "LaMP-2-movie"),
    answer_hint="one tag from the list", question_template=_Q_MOVIE,
))  # fmt: skip
_register(LaMPTask(
    name="LaMP-2N", output_field="category", official_id="LaMP_2", title="Personalized news categorization (old LaMP-2)",
    kind="classification", labels=NEWS_CATEGORIES, profile_fields=("text", "title", "category"),
    query_fn=_after_marker("article:"), document_template="{title} {text}",
    item_template='the category for the article: "{text}" is "{category}" ', truncated_field="text",
    compose_fn=_suffix_compose(". "), aliases=("LaMP-2-news", "LaMP-2-old"),
    answer_hint="one category from the list", question_template=_Q_NEWS,
))  # fmt: skip
_register(LaMPTask(
    name="LaMP-3", output_field="score", official_id="LaMP_3", title="Personalized product rating",
    kind="rating", labels=None, profile_fields=("text", "score"),
    query_fn=_after_marker("review:"), document_template="{text}",
    item_template='{score} is the score for "{text}" ', truncated_field="text",
    compose_fn=_suffix_compose(". "), answer_hint="one of 1, 2, 3, 4, 5", question_template=_Q_RATING,
))  # fmt: skip
_register(LaMPTask(
    name="LaMP-4", output_field="title", official_id="LaMP_4", title="Personalized news headline generation",
    kind="generation", profile_fields=("text", "title"),
    query_fn=_after_marker("article:"), document_template="{title} {text}",
    item_template='"{title}" is the title for "{text}" ', truncated_field="text",
    compose_fn=_suffix_compose(". "), answer_hint="the headline only",
    question_template="Generate a headline for the following article: {text}",
))  # fmt: skip
_register(LaMPTask(
    name="LaMP-5", output_field="title", official_id="LaMP_5", title="Personalized scholarly title generation",
    kind="generation", profile_fields=("title", "abstract"),
    query_fn=_after_marker("paper:"), document_template="{title} {abstract}",
    item_template='"{title}" is a title for "{text}" ', truncated_field="abstract",
    compose_fn=_suffix_compose(". Following the given patterns "), compose_words="Following the given patterns",
    answer_hint="the title only", question_template="Generate a title for the following abstract of a paper: {abstract}",
))  # fmt: skip
_register(LaMPTask(
    name="LaMP-6", output_field="title", official_id="LaMP_6", title="Personalized email subject generation",
    kind="generation", profile_fields=("text", "title"),
    query_fn=_after_first_colon, document_template="{title} {text}",
    item_template='"{title}" is the title for "{text}" ', truncated_field="text",
    compose_fn=_suffix_compose(". "), answer_hint="the subject only",
    question_template="Generate a subject for the following email: {text}",
))  # fmt: skip
_register(LaMPTask(
    name="LaMP-7", output_field="text", official_id="LaMP_7", title="Personalized tweet paraphrasing",
    kind="generation", profile_fields=("text",),
    query_fn=_after_first_colon, document_template="{text}",
    item_template='"{text}" ', truncated_field="text",
    compose_fn=_suffix_compose(" are written by a person. Following the given patterns "),
    compose_words="are written by a person. Following the given patterns",
    answer_hint="the paraphrased tweet only",
    question_template="Paraphrase the following tweet without any explanation before or after it: {text}",
))  # fmt: skip


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip()).upper()


_ALIASES: dict[str, str] = {}
for _task in TASKS.values():
    for _alias in (_task.name, *_task.aliases):
        _ALIASES[_key(_alias)] = _task.name


def get_task(name: str | LaMPTask) -> LaMPTask:
    """Look a task up by any accepted spelling: ``LaMP-7``, ``LaMP_7``, ``lamp7``, ``LaMP-2M``..."""
    if isinstance(name, LaMPTask):
        return name
    key = _key(str(name))
    if key not in _ALIASES:
        key = re.sub(r"^LAMP-?(\d)", r"LAMP-\1", key)
    if key not in _ALIASES:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[_ALIASES[key]]


def task_names() -> list[str]:
    return list(TASKS)
