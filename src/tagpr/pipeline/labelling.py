"""Label free-text reasoning (from a model that does not write tags) with the 9 tags.

A chain is split into steps (paragraphs, then sentences), each step gets one tag, and the result is
re-assembled in the grammar of ``tags.py``.  Two labellers:

* :class:`EmbeddingLabeller` (CPU default): cosine similarity between the step and each tag's
  description under the packaged sentence encoder;
* :class:`LLMLabeller`: asks a generation backend for one tag per step; a step it does not label
  validly falls back to the embedding labeller.

Afterwards the grammar's coverage is enforced: the first step becomes ``understand_task``, the last
``conclude``, a step citing ``[k]`` becomes ``examine_history`` when none is, and the middle step
closest to a preference becomes ``infer_preference`` when neither pattern tag is present.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from tagpr.generation.base import GenerationBackend, SamplingParams
from tagpr.tags import TAGS, parse_chain
from tagpr.tasks import LaMPTask, get_task

TAG_EXAMPLES: dict[str, str] = {
    "understand_task": "The task asks me to choose one label / give a score / rewrite the text; the answer format is",
    "analyze_query": "The input is about this topic, mentions these entities, its tone and length are",
    "examine_history": "Looking at the user's past items [1] and [3], they show",
    "identify_patterns": "Across the history the user most often uses these labels, scores or style features",
    "infer_preference": "So this user prefers, tends to, likes, writes in a style that",
    "cross_reference": "Applying this user's preference to this particular input means",
    "draft_answer": "A candidate answer is; possible answers are",
    "verify": "Checking the candidate against the history and the required format",
    "conclude": "Therefore the final answer is",
}
_ANSWER_LINE = re.compile(r"^\s*(?:final answer|answer)\s*[:\-]\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_CITE = re.compile(r"\[\d{1,4}\]")


class Labeller(Protocol):
    name: str

    def label(self, steps: Sequence[str]) -> list[str]:
        ...


def split_steps(text: str, max_steps: int = 12) -> list[str]:
    """Paragraphs, or sentences when the text is one paragraph; at most ``max_steps`` (the rest merged)."""
    parts = [p.strip() for p in re.split(r"\n\s*\n|\n(?=\s*(?:\d+[.)]|[-*•])\s)", text) if p.strip()]
    if len(parts) <= 2:
        parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\[])", text) if s.strip()]
    if len(parts) > max_steps:
        parts = parts[: max_steps - 1] + [" ".join(parts[max_steps - 1 :])]
    return parts


def split_free_text(text: object) -> tuple[list[str], str]:
    """(reasoning steps, answer) of an untagged chain: the answer is an ``Answer:`` line, else the last line."""
    s = text if isinstance(text, str) else ""
    s = re.sub(r"</?think>", "\n", s[:50_000])
    m = None
    for m in _ANSWER_LINE.finditer(s):
        pass
    if m is not None:
        answer, reasoning = m.group(1).strip(), s[: m.start()]
    else:
        lines = [ln for ln in s.splitlines() if ln.strip()]
        answer = lines[-1].strip() if lines else ""
        reasoning = "\n".join(lines[:-1])
    return split_steps(reasoning), answer


class EmbeddingLabeller:
    name = "embedding"

    def __init__(self, encoder: Any = None):
        if encoder is None:
            from tagpr.embedded import load_sentence_encoder

            encoder = load_sentence_encoder()
        self.encoder = encoder
        self._tags = list(TAGS)
        self._tag_emb = self.encoder.encode([f"{t.replace('_', ' ')}: {TAGS[t]}. {TAG_EXAMPLES[t]}" for t in self._tags],
                                            normalize_embeddings=True, convert_to_numpy=True)

    def similarities(self, steps: Sequence[str]) -> Any:
        emb = self.encoder.encode(list(steps), normalize_embeddings=True, convert_to_numpy=True)
        return emb @ self._tag_emb.T

    def label(self, steps: Sequence[str]) -> list[str]:
        if not steps:
            return []
        sims = self.similarities(steps)
        return [self._tags[int(i)] for i in sims.argmax(axis=1)]


class LLMLabeller:
    name = "llm"

    def __init__(self, backend: GenerationBackend, fallback: Labeller | None = None):
        self.backend = backend
        self.fallback = fallback

    def prompt(self, steps: Sequence[str]) -> str:
        tags = "\n".join(f"{t}: {d}" for t, d in TAGS.items())
        body = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        return (f"Label each reasoning step with exactly one of these tags:\n{tags}\n\nSteps:\n{body}\n\n"
                "Reply with one line per step, as '<number>: <tag>'.")

    def label(self, steps: Sequence[str]) -> list[str]:
        if not steps:
            return []
        text = self.backend.generate([self.prompt(steps)], SamplingParams(max_new_tokens=12 * len(steps) + 16))[0][0].text
        found: dict[int, str] = {}
        for m in re.finditer(r"(\d+)\s*[:.)-]\s*<?([a-z_]+)>?", text):
            i, tag = int(m.group(1)), m.group(2)
            if 1 <= i <= len(steps) and tag in TAGS and i not in found:
                found[i] = tag
        missing = [i for i in range(1, len(steps) + 1) if i not in found]
        if missing and self.fallback is not None:
            labels = self.fallback.label([steps[i - 1] for i in missing])
            found.update(zip(missing, labels))
        return [found.get(i, "cross_reference") for i in range(1, len(steps) + 1)]


def enforce_coverage(steps: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Adjust labels so the chain meets the grammar's required coverage and order."""
    tags = list(tags)
    if not tags:
        return tags
    if len(tags) == 1:
        return ["conclude"]
    tags[0], tags[-1] = "understand_task", "conclude"
    middle = range(1, len(tags) - 1)
    if "examine_history" not in tags:
        cited = [i for i in middle if _CITE.search(steps[i])]
        pick = cited[0] if cited else (1 if len(tags) > 2 else None)
        if pick is not None:
            tags[pick] = "examine_history"
    if "identify_patterns" not in tags and "infer_preference" not in tags:
        free = [i for i in middle if tags[i] != "examine_history"]
        if free:
            tags[free[0]] = "infer_preference"
    return tags


def tag_free_text(text: object, task: LaMPTask | str, labeller: Labeller) -> str | None:
    """A tagged chain from free-text reasoning, or None when there is too little to tag (needs >= 4 steps)."""
    t = get_task(task)
    steps, answer = split_free_text(text)
    if len(steps) < 4 or not answer:
        return None
    tags = enforce_coverage(steps, labeller.label(steps))
    body = "\n".join(f"<{tag}>{_clean(s)}</{tag}>" for tag, s in zip(tags, steps))
    return f"<think>\n{body}\n</think>\n<answer>{t.parse(answer)}</answer>"


def is_tagged(text: object) -> bool:
    return bool(parse_chain(text).steps)


def _clean(s: str) -> str:
    return re.sub(r"</?[A-Za-z_][A-Za-z0-9_\-]*>", "", s).strip() or "-"
