"""Answer parsers, official LaMP metrics and task rewards: one definition of each, and the answer spaces that
own them.

A task's :class:`AnswerSpace` (its record's ``answer:``) is one of :class:`LabelSet` (``kind: classification``),
:class:`RatingScale` (``kind: rating``) or :class:`FreeText` (``kind: generation``); every stage asks it to parse,
score and reward answers (and for its per-kind defaults) instead of branching on the kind.

Everything here takes model output as *untrusted text*: parsers and rewards never raise on any
string (see ``tests/test_scoring_properties.py``).  Metrics follow the official LaMP evaluation
(``LaMP/eval/evaluation.py``):

* classification (LaMP-1, LaMP-2): predictions and golds are stripped, then looked up by *exact*
  string in the task's label list; anything else maps to ``-1`` and is wrong.  Accuracy, and macro-F1
  over *every* label of the task (labels absent from both golds and predictions count as F1 = 0, as
  scikit-learn does with ``labels=range(n), average="macro"``).
* rating (LaMP-3, scale 1 to 5): ``float(pred)``; an unparsable prediction scores as whichever end of the scale
  is farther from the gold (the top on a tie).  MAE and RMSE.  A non-finite float ("nan", "inf") is treated as
  unparsable too (the official code would let it poison the mean).
* generation (LaMP-4..7): ROUGE-1 and ROUGE-L F-measure, ``rouge_score`` default tokenizer, no
  stemmer, averaged over examples (the official ``evaluate`` wrapper reports a bootstrap median that
  differs from this mean by ~1e-4).  The answer is the first line of the output, or every line for a
  ``multiline`` task (LongLaMP-style reviews and abstracts).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tagpr.recipes import StrictModel

TaskKind = Literal["classification", "rating", "generation"]

_RATING_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_LEAD_IN_RE = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is)[^:\n]{0,60}:|(?:paraphrase(?:d)?(?: tweet)?|rewritten tweet|"
    r"tweet|title|headline|subject|answer|output)\s*:)\s*",
    re.IGNORECASE,
)
_CITATION_RE = re.compile(r"^\[\d{1,3}\]\s+")
_QUOTES = "\"'“”‘’`"


# --------------------------------------------------------------------------------------------- parsers
def parse_label(text: object, labels: Sequence[str]) -> str:
    """Extract a label from free text; returns the stripped text unchanged when none is found.

    An output that is exactly a label (after stripping) is that label.  Otherwise the earliest label
    mentioned in the text wins (longest first at the same position, so "dark comedy" beats
    "comedy"); matching ignores case and surrounding quotes/punctuation.  A bare ``1`` is *not*
    turned into ``[1]``: brackets are part of LaMP-1's labels, and the official metric marks such
    answers wrong.
    """
    s = _as_text(text).strip()
    if s in labels:
        return s
    core = s.strip(_QUOTES + " .!\n\t")
    low = core.lower()
    for label in labels:
        if low == label.lower():
            return label
    best: tuple[int, int, str] | None = None
    for label in labels:
        pattern = _label_pattern(label)
        m = pattern.search(low)
        if m is not None:
            key = (m.start(), -len(label), label)
            if best is None or key < best:
                best = key
    return best[2] if best is not None else s


@lru_cache(maxsize=256)
def _label_pattern(label: str) -> re.Pattern[str]:
    lab = re.escape(label.lower())
    # word boundaries only where the label starts/ends with a word character ("[1]" has none)
    left = r"(?<![\w-])" if label[:1].isalnum() else ""
    right = r"(?![\w-])" if label[-1:].isalnum() else ""
    return re.compile(left + lab + right)


def parse_rating(text: object) -> str:
    """The first number in the text (e.g. ``"Rating: 4/5"`` -> ``"4"``), else the stripped text."""
    s = _as_text(text).strip()
    m = _RATING_RE.search(s[:10_000])
    if m is None:
        return s
    num = m.group(0)
    return num[:-1] if num.endswith(".") else num


def parse_generation(text: object, multiline: bool = False) -> str:
    """Clean a free-text answer: chatty lead-ins (a "Here is...:" prefix, or a short first line ending with a
    colon) and wrapping quotes removed; the first non-empty line, or with ``multiline`` every line from there on
    (a LongLaMP-style review or abstract: its line breaks kept, blank lines between paragraphs folded to one)."""
    s = _as_text(text).strip()
    s = _LEAD_IN_RE.sub("", s, count=1).strip()
    lines = [ln.strip() for ln in s[:100_000].splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":") and len(lines[0].split()) <= 8:
        lines = lines[1:]  # a lead-in line ("The user's tweet would be:") before the answer
    if lines:
        lines[0] = _CITATION_RE.sub("", lines[0], count=1).strip()  # "[4] ..." (a cited item index) is not part of it
        s = "\n".join(lines) if multiline else lines[0]
    if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
        s = s[1:-1].strip()
    return s


def _as_text(text: object) -> str:
    if isinstance(text, str):
        return text
    if text is None:
        return ""
    try:
        return str(text)
    except Exception:  # noqa: BLE001 - untrusted objects may have broken __str__
        return ""


def completion_text(completion: object) -> str:
    """The text of one generated completion: a string, or TRL's conversational ``[{"role", "content"}, ...]``
    (the last message's content).  Never raises."""
    if isinstance(completion, list):
        if not completion:
            return ""
        last = completion[-1]
        return _as_text(last.get("content", "")) if isinstance(last, dict) else _as_text(last)
    return _as_text(completion)


# ------------------------------------------------------------------------------------- rating values
def rating_value(pred: object, gold: object, low: float = 1, high: float = 5) -> float:
    """Official LaMP-3 mapping of a prediction to a number (the worse end of the ``low``..``high`` scale when
    unparsable)."""
    g = float(str(gold).strip())
    v = _parsed_rating(pred)
    if v is not None:
        return v
    return float(low) if abs(low - g) > abs(high - g) else float(high)


def _parsed_rating(pred: object) -> float | None:
    try:
        v = float(_as_text(pred).strip())
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------------------------------- ROUGE
@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


def rouge_f(pred: object, gold: object) -> tuple[float, float]:
    """(ROUGE-1 F, ROUGE-L F) of one prediction against one reference, official settings."""
    p = _as_text(pred).strip()
    g = _as_text(gold).strip()
    # rouge_score's LCS is quadratic in length: bound untrusted output (a LaMP answer is short)
    p = p[:20_000]
    scores = _rouge_scorer().score(g, p)
    return scores["rouge1"].fmeasure, scores["rougeL"].fmeasure


# ------------------------------------------------------------------------------------------ metrics
def label_indices(texts: Sequence[object], labels: Sequence[str]) -> list[int]:
    """The official label lookup: each stripped text's index in ``labels``, -1 (wrong) when it is not one."""
    index = {label: i for i, label in enumerate(labels)}
    return [index.get(_as_text(x).strip(), -1) for x in texts]


def classification_metrics(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    p, g = label_indices(preds, labels), label_indices(golds, labels)
    n = len(g)
    acc = sum(a == b for a, b in zip(p, g)) / n if n else 0.0
    f1s = []
    for c in range(len(labels)):
        tp = sum(1 for a, b in zip(p, g) if a == c and b == c)
        fp = sum(1 for a, b in zip(p, g) if a == c and b != c)
        fn = sum(1 for a, b in zip(p, g) if a != c and b == c)
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": acc, "f1": sum(f1s) / len(f1s) if f1s else 0.0}


def rating_errors(preds: Sequence[object], golds: Sequence[object], low: float = 1, high: float = 5) -> list[float]:
    """Per-example signed errors of :func:`rating_value` against the gold."""
    return [rating_value(p, g, low, high) - float(str(g).strip()) for p, g in zip(preds, golds)]


def rating_metrics(preds: Sequence[str], golds: Sequence[str], low: float = 1, high: float = 5) -> dict[str, float]:
    errs = rating_errors(preds, golds, low, high)
    n = len(errs)
    if not n:
        return {"mae": 0.0, "rmse": 0.0}
    return {"mae": sum(abs(e) for e in errs) / n, "rmse": math.sqrt(sum(e * e for e in errs) / n)}


def generation_metrics(preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    pairs = [rouge_f(p, g) for p, g in zip(preds, golds)]
    n = len(pairs)
    if not n:
        return {"rouge-1": 0.0, "rouge-L": 0.0}
    return {"rouge-1": sum(a for a, _ in pairs) / n, "rouge-L": sum(b for _, b in pairs) / n}


# ------------------------------------------------------------------------------------ answer spaces
class AnswerSpace(StrictModel):
    """What a task's answers are, and the one place that knows how to read, score and reward them: a task
    record's ``answer:`` (``kind: classification`` with ``labels``, ``kind: rating`` with a scale, ``kind:
    generation`` for free text).  Every stage asks its task's answer space instead of branching on the kind.

    ``closed``: the answers are a finite list (:meth:`options`); ``ordered``: they are points of a scale (a
    median and a distance mean something).  The per-kind defaults of the stages that produce answers live here
    too: ``max_new_tokens`` (evaluation without reasoning), ``accept_threshold`` (the task reward a teacher's
    chain needs), ``aggregate`` (RRP's default way to combine candidates) and ``rrp_budgets`` (tokens per RRP
    section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TaskKind
    max_new_tokens: int = Field(16, ge=1)  # answer tokens to generate when the model answers directly

    metric_names: ClassVar[tuple[str, ...]]  # the official metrics, the primary one first
    higher_is_better: ClassVar[bool] = True
    closed: ClassVar[bool] = True
    ordered: ClassVar[bool] = False
    accept_threshold: ClassVar[float] = 1.0
    aggregate: ClassVar[str] = "vote"
    rrp_budgets: ClassVar[tuple[int, ...]]

    @property
    def part_names(self) -> tuple[str, ...]:
        """The per-example parts (:meth:`example_parts`) whose means are the metrics, in ``metric_names`` order."""
        return self.metric_names

    @property
    def answer_layout(self) -> str:
        """How the answer is laid out, as prompts say it."""
        return ", on one line"

    @property
    def primary_metric(self) -> tuple[str, bool]:
        """(metric name, higher is better)."""
        return self.metric_names[0], self.higher_is_better

    def parse(self, text: object) -> str:
        """Untrusted model output -> the answer to score (never raises)."""
        raise NotImplementedError

    def metrics(self, preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        """The official metrics of parsed predictions against golds."""
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} predictions for {len(golds)} golds")
        return self._metrics(preds, golds)

    def reward(self, answer: object, gold: object) -> float:
        """Per-example reward in [0, 1] of an already *parsed* answer; never raises."""
        try:
            return float(min(1.0, max(0.0, self._reward(answer, gold))))
        except Exception:  # noqa: BLE001 - a reward must never take a training run down
            return 0.0

    def is_valid(self, answer: object) -> bool:
        """Whether a parsed answer lies in the answer space."""
        return self.canonical(answer) is not None

    def canonical(self, text: object) -> str | None:
        """The answer ``text`` stands for in this space (a listed label, a scale point), None when none."""
        raise NotImplementedError

    def options(self) -> list[str] | None:
        """The closed answer space (labels, scale points), or None for free text."""
        return None

    def default_answer(self) -> str:
        """An answer to fall back on when nothing else gives one."""
        return (self.options() or [""])[0]

    def point_estimate(self, posterior: Mapping[Any, float]) -> Any:
        """The answer that a distribution over answers (answer -> probability) stands for (None for none)."""
        return max(posterior, key=posterior.__getitem__) if posterior else None

    def correction_note(self) -> str:
        """What a model that strays from the answer space is told."""
        raise NotImplementedError

    # -- per-example parts of the metrics, for resampling (tagpr.stats): every metric is a function of column sums
    def example_parts(self, preds: Sequence[object], golds: Sequence[object]) -> dict[str, Any]:
        """Per-example contributions to the metrics (arrays of length ``len(golds)``), ``reward`` included."""
        import numpy as np

        return {"reward": np.array([self.reward(p, g) for p, g in zip(preds, golds)], dtype=float),
                **self._parts(preds, golds)}

    def metric_columns(self, parts: Mapping[str, Any]) -> Any:
        """The additive per-example columns (``reward`` first) whose sums give every metric."""
        import numpy as np

        return np.hstack([parts["reward"][:, None], *(parts[k][:, None] for k in self.part_names)])

    def metrics_from_sums(self, sums: Any, total: Any) -> dict[str, Any]:
        """Corpus metrics (``reward`` included) from column sums (rows = resamples) over ``total`` examples."""
        return {REWARD: sums[:, 0] / total, **{k: sums[:, 1 + i] / total for i, k in enumerate(self.metric_names)}}

    def _metrics(self, preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        raise NotImplementedError

    def _reward(self, answer: object, gold: object) -> float:
        raise NotImplementedError

    def _parts(self, preds: Sequence[object], golds: Sequence[object]) -> dict[str, Any]:
        raise NotImplementedError


REWARD = "mean_reward"  # the mean task reward, a column beside the official metrics


class LabelSet(AnswerSpace):
    """One label of a fixed list (LaMP-1, LaMP-2): accuracy and macro-F1 over every label; reward 1 for the gold
    label, 0 for anything else (a text outside the list included)."""

    kind: Literal["classification"] = "classification"
    labels: tuple[str, ...] = Field(min_length=2)

    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "f1")
    rrp_budgets: ClassVar[tuple[int, ...]] = (40, 64, 48, 16)

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        bad = next((x for x in labels if not x.strip() or x != x.strip()), None)
        if bad is not None:
            raise ValueError(f"label {bad!r}: labels are non-empty and have no surrounding spaces")
        twice = next((x for i, x in enumerate(labels) if x in labels[:i]), None)
        if twice is not None:
            raise ValueError(f"label {twice!r} is listed twice")
        return labels

    def parse(self, text: object) -> str:
        return parse_label(text, self.labels)

    def canonical(self, text: object) -> str | None:
        a = _as_text(text).strip()
        return a if a in self.labels else None

    def options(self) -> list[str]:
        return list(self.labels)

    def correction_note(self) -> str:
        return f"(The answer must be exactly one of: {', '.join(self.labels)}.)"

    def _metrics(self, preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        return classification_metrics(preds, golds, self.labels)

    def _reward(self, answer: object, gold: object) -> float:
        a = self.canonical(answer)
        return 1.0 if a is not None and a == _as_text(gold).strip() else 0.0

    def _parts(self, preds: Sequence[object], golds: Sequence[object]) -> dict[str, Any]:
        import numpy as np

        p = np.array(label_indices(preds, self.labels), dtype=np.int64)
        g = np.array(label_indices(golds, self.labels), dtype=np.int64)
        return {"correct": (p == g).astype(float), "pred": p, "gold": g}

    def metric_columns(self, parts: Mapping[str, Any]) -> Any:
        # macro-F1 is not a mean of per-example values: per-label true-positive, predicted and gold counts
        import numpy as np

        classes = np.arange(len(self.labels))
        pred_oh = (parts["pred"][:, None] == classes).astype(float)
        gold_oh = (parts["gold"][:, None] == classes).astype(float)
        return np.hstack([parts["reward"][:, None], parts["correct"][:, None], pred_oh * gold_oh, pred_oh, gold_oh])

    def metrics_from_sums(self, sums: Any, total: Any) -> dict[str, Any]:
        import numpy as np

        c = len(self.labels)
        tp, pred, gold = sums[:, 2 : 2 + c], sums[:, 2 + c : 2 + 2 * c], sums[:, 2 + 2 * c : 2 + 3 * c]
        denom = pred + gold  # = 2tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return {REWARD: sums[:, 0] / total, "accuracy": sums[:, 1] / total, "f1": f1.mean(axis=1)}


class RatingScale(AnswerSpace):
    """A whole-number score from ``low`` to ``high`` (LaMP-3: 1 to 5).  MAE and RMSE, where an unparsable
    prediction scores as the end of the scale farther from the gold; reward ``1 - |y_hat - y| / (high - low)``."""

    kind: Literal["rating"] = "rating"
    low: int = 1
    high: int = 5
    max_new_tokens: int = Field(8, ge=1)

    metric_names: ClassVar[tuple[str, ...]] = ("mae", "rmse")
    higher_is_better: ClassVar[bool] = False
    ordered: ClassVar[bool] = True
    accept_threshold: ClassVar[float] = 0.75
    aggregate: ClassVar[str] = "median"
    rrp_budgets: ClassVar[tuple[int, ...]] = (40, 64, 48, 8)

    @model_validator(mode="after")
    def _span(self) -> "RatingScale":
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low})")
        return self

    @property
    def part_names(self) -> tuple[str, ...]:
        return ("abs_error", "squared_error")

    @property
    def values(self) -> range:
        return range(self.low, self.high + 1)

    def score(self, text: object) -> int | None:
        """The scale point a text stands for (a finite number, rounded and clipped to the scale), else None."""
        v = _parsed_rating(text)
        return None if v is None else int(min(self.high, max(self.low, round(v))))

    def parse(self, text: object) -> str:
        return parse_rating(text)

    def canonical(self, text: object) -> str | None:
        s = self.score(text)
        return None if s is None else str(s)

    def is_valid(self, answer: object) -> bool:
        v = _parsed_rating(answer)
        return v is not None and self.low <= v <= self.high

    def options(self) -> list[str]:
        return [str(v) for v in self.values]

    def default_answer(self) -> str:
        return str(self.high)

    def point_estimate(self, posterior: Mapping[Any, float]) -> Any:
        """The median of a distribution over scale points, keyed by text or number (the MAE-optimal answer)."""
        acc = 0.0
        for answer in sorted(posterior, key=float):
            acc += posterior[answer]
            if acc >= 0.5:
                return answer
        return None

    def correction_note(self) -> str:
        *rest, last = self.options()
        return f"(The answer must be one number: {', '.join(rest)} or {last}.)"

    def _metrics(self, preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        return rating_metrics(preds, golds, self.low, self.high)

    def _reward(self, answer: object, gold: object) -> float:
        v = _parsed_rating(answer)
        return 0.0 if v is None else 1.0 - abs(v - float(str(gold).strip())) / (self.high - self.low)

    def _parts(self, preds: Sequence[object], golds: Sequence[object]) -> dict[str, Any]:
        import numpy as np

        err = np.array(rating_errors(preds, golds, self.low, self.high), dtype=float)
        return {"abs_error": np.abs(err), "squared_error": err * err}

    def metrics_from_sums(self, sums: Any, total: Any) -> dict[str, Any]:
        import numpy as np

        out = super().metrics_from_sums(sums, total)
        out["rmse"] = np.sqrt(out["rmse"])  # the root of the mean squared error
        return out


class FreeText(AnswerSpace):
    """Free text (LaMP-4..7; ``multiline`` for LongLaMP-style answers that keep their line breaks): ROUGE-1 and
    ROUGE-L F, reward their mean.  Any non-empty text is a valid answer."""

    kind: Literal["generation"] = "generation"
    multiline: bool = False
    max_new_tokens: int = Field(64, ge=1)

    metric_names: ClassVar[tuple[str, ...]] = ("rouge-1", "rouge-L")
    closed: ClassVar[bool] = False
    accept_threshold: ClassVar[float] = 0.35
    aggregate: ClassVar[str] = "mbr"
    rrp_budgets: ClassVar[tuple[int, ...]] = (40, 64, 64, 48)

    @property
    def answer_layout(self) -> str:
        return "" if self.multiline else super().answer_layout

    def parse(self, text: object) -> str:
        return parse_generation(text, self.multiline)

    def canonical(self, text: object) -> str | None:
        a = _as_text(text).strip()
        return a or None

    def point_estimate(self, posterior: Mapping[Any, float]) -> Any:
        return None

    def correction_note(self) -> str:
        return f"(The answer must be the text itself{self.answer_layout}.)"

    def _metrics(self, preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
        return generation_metrics(preds, golds)

    def _reward(self, answer: object, gold: object) -> float:
        r1, rl = rouge_f(answer, gold)
        return (r1 + rl) / 2.0

    def _parts(self, preds: Sequence[object], golds: Sequence[object]) -> dict[str, Any]:
        import numpy as np

        r = np.array([rouge_f(p, g) for p, g in zip(preds, golds)], dtype=float).reshape(-1, 2)
        return {"rouge-1": r[:, 0], "rouge-L": r[:, 1]}


ANSWER_SPACES = (LabelSet, RatingScale, FreeText)
