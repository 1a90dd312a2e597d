"""Answer parsers, official LaMP metrics and task rewards: one definition of each.

Everything here takes model output as *untrusted text*: parsers and rewards never raise on any
string (see ``tests/test_scoring_properties.py``).  Metrics follow the official LaMP evaluation
(``LaMP/eval/evaluation.py``):

* classification (LaMP-1, LaMP-2): predictions and golds are stripped, then looked up by *exact*
  string in the task's label list; anything else maps to ``-1`` and is wrong.  Accuracy, and macro-F1
  over *every* label of the task (labels absent from both golds and predictions count as F1 = 0, as
  scikit-learn does with ``labels=range(n), average="macro"``).
* rating (LaMP-3): ``float(pred)``; an unparsable prediction scores as whichever of 1 or 5 is farther
  from the gold (5 on a tie).  MAE and RMSE.  A non-finite float ("nan", "inf") is treated as
  unparsable too (the official code would let it poison the mean).
* generation (LaMP-4..7): ROUGE-1 and ROUGE-L F-measure, ``rouge_score`` default tokenizer, no
  stemmer, averaged over examples (the official ``evaluate`` wrapper reports a bootstrap median that
  differs from this mean by ~1e-4).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

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


def parse_generation(text: object) -> str:
    """Clean a free-text answer: first non-empty line, chatty lead-ins (a "Here is...:" prefix, or a
    short first line ending with a colon) and wrapping quotes removed."""
    s = _as_text(text).strip()
    s = _LEAD_IN_RE.sub("", s, count=1).strip()
    lines = [ln.strip() for ln in s[:100_000].splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":") and len(lines[0].split()) <= 8:
        lines = lines[1:]  # a lead-in line ("The user's tweet would be:") before the answer
    if lines:
        s = _CITATION_RE.sub("", lines[0], count=1).strip()  # "[4] ..." (a cited item index) is not part of it
    if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
        s = s[1:-1].strip()
    return s


def parse_answer(text: object, kind: TaskKind, labels: Sequence[str] | None = None) -> str:
    if kind == "classification":
        return parse_label(text, labels or ())
    if kind == "rating":
        return parse_rating(text)
    return parse_generation(text)


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
def rating_value(pred: object, gold: object) -> float:
    """Official LaMP-3 mapping of a prediction to a number (worst of 1/5 when unparsable)."""
    g = float(str(gold).strip())
    try:
        v = float(_as_text(pred).strip())
        if math.isfinite(v):
            return v
    except (ValueError, OverflowError):
        pass
    return 1.0 if abs(1 - g) > abs(5 - g) else 5.0


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
def classification_metrics(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    index = {label: i for i, label in enumerate(labels)}
    p = [index.get(_as_text(x).strip(), -1) for x in preds]
    g = [index.get(_as_text(x).strip(), -1) for x in golds]
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


def rating_metrics(preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    errs = [rating_value(p, g) - float(str(g).strip()) for p, g in zip(preds, golds)]
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


def compute_metrics(
    kind: TaskKind, preds: Sequence[str], golds: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, float]:
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} golds")
    if kind == "classification":
        return classification_metrics(preds, golds, labels or ())
    if kind == "rating":
        return rating_metrics(preds, golds)
    return generation_metrics(preds, golds)


# ------------------------------------------------------------------------------------------ rewards
def task_reward(answer: object, gold: object, kind: TaskKind, labels: Sequence[str] | None = None) -> float:
    """Per-example reward in [0, 1] on an already *parsed* answer; never raises.

    classification: exact label = 1 (an answer outside the label space = 0); rating:
    ``1 - |y_hat - y| / 4`` clipped to [0, 1] (unparsable = 0); generation: mean of ROUGE-1 and
    ROUGE-L F.
    """
    try:
        if kind == "classification":
            a = _as_text(answer).strip()
            return 1.0 if a in (labels or ()) and a == _as_text(gold).strip() else 0.0
        if kind == "rating":
            v = _parsed_rating(answer)
            if v is None:
                return 0.0
            return float(min(1.0, max(0.0, 1.0 - abs(v - float(str(gold).strip())) / 4.0)))
        r1, rl = rouge_f(answer, gold)
        return float((r1 + rl) / 2.0)
    except Exception:  # noqa: BLE001 - a reward must never take a training run down
        return 0.0


PRIMARY_METRIC: dict[TaskKind, tuple[str, bool]] = {
    # metric name, higher is better
    "classification": ("accuracy", True),
    "rating": ("mae", False),
    "generation": ("rouge-1", True),
}
