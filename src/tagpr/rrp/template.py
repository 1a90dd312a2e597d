"""RRP's hierarchical reasoning template: task analysis -> user profile -> response -> answer.

Every section opens with a fixed header ``### i. Title``; the controller (``controller.py``) watches
for the ``### i.`` prefix of each header, so a model that words a title differently is still followed.
For reasoning models that think inside ``<think>...</think>``, sections 1-3 go inside the think block
and the answer section after it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tagpr.prompts import ITEMS_HEADER, TASK_PREFIX, numbered_items
from tagpr.tasks import LaMPTask, get_task


@dataclass(frozen=True)
class Section:
    name: str
    header: str
    instruction: str

    @property
    def marker(self) -> str:
        """The header's numbered prefix (``### 2.``), which is what the controller matches."""
        return self.header.split(".")[0] + "."


SECTIONS: tuple[Section, ...] = (
    Section("task", "### 1. Task analysis", "what is asked and what the answer must look like"),
    Section("profile", "### 2. User profile", "what the user's past items show (cite them as [k]): recurring "
            "topics, labels or scores, and writing style"),
    Section("response", "### 3. Response", "apply that profile to this input and draft the answer this user would give"),
    Section("answer", "### 4. Answer", "{answer_hint}{answer_layout}, nothing else"),
)
ANSWER = len(SECTIONS) - 1

def default_budgets(task: LaMPTask | str) -> tuple[int, ...]:
    """Tokens per section (task, profile, response, answer): the task's answer space's ``rrp_budgets``."""
    return get_task(task).answers.rrp_budgets


def parse_budgets(spec: str | Sequence[int] | None, task: LaMPTask | str) -> tuple[int, ...]:
    """``"40,64,64,48"`` (or a sequence) -> one positive budget per section; None -> the task default."""
    if spec is None or spec == "":
        return default_budgets(task)
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        budgets = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise ValueError(f"budgets {spec!r}: need {len(SECTIONS)} integers, e.g. 40,64,64,48") from None
    if len(budgets) != len(SECTIONS) or min(budgets) < 1:
        raise ValueError(f"budgets {spec!r}: need {len(SECTIONS)} positive integers "
                         f"({', '.join(s.name for s in SECTIONS)})")
    return budgets


def build_rrp_prompt(task: LaMPTask | str, input_text: str, items: Sequence[Mapping[str, Any]] | None,
                     max_item_words: int = 40) -> str:
    """The user turn: the template's headers with what each section holds, the history, the input."""
    t = get_task(task)
    lines = [
        "Answer as this specific user would. Reason in four sections with exactly these headers, then stop:",
    ]
    for s in SECTIONS:
        text = s.instruction.format(answer_hint=t.answer_hint, answer_layout=t.answers.answer_layout)
        lines.append(f"{s.header}: {text}.")
    if items:
        lines += ["", ITEMS_HEADER, numbered_items(t, items, max_item_words)]
    lines += ["", f"{TASK_PREFIX}{input_text}"]
    return "\n".join(lines)


@dataclass
class TemplateCheck:
    """How well a text follows the template (never raises; see :func:`check_template`)."""

    sections: list[str] = field(default_factory=list)  # section names in the order their headers appear
    in_order: bool = False  # every section exactly once, in order
    answer: str = ""
    answer_valid: bool = False

    @property
    def adherent(self) -> bool:
        return self.in_order and self.answer_valid


_MARKER_RE = re.compile(r"###\s*([1-9])\.")


def split_sections(text: str) -> list[tuple[int, str]]:
    """(section index, body) for each ``### i.`` header in order of appearance (body without header line)."""
    out = []
    matches = [m for m in _MARKER_RE.finditer(text) if 1 <= int(m.group(1)) <= len(SECTIONS)]
    for j, m in enumerate(matches):
        end = matches[j + 1].start() if j + 1 < len(matches) else len(text)
        body = text[m.end() : end]
        nl = body.find("\n")
        body = body[nl + 1 :] if nl != -1 else ""  # drop the rest of the header line (the title)
        out.append((int(m.group(1)) - 1, body.replace("</think>", "").strip()))
    return out


def extract_answer(text: object, task: LaMPTask | str) -> str:
    """The parsed answer: from the answer section when there is one, else from the text's last line."""
    t = get_task(task)
    s = text if isinstance(text, str) else ("" if text is None else str(text))
    s = s[:100_000]
    secs = split_sections(s)
    answers = [body for idx, body in secs if idx == ANSWER]
    if answers:
        return t.parse(answers[-1])
    tail = s.split("</think>")[-1]
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    return t.parse(lines[-1] if lines else "")


def check_template(text: object, task: LaMPTask | str) -> TemplateCheck:
    t = get_task(task)
    s = text if isinstance(text, str) else ("" if text is None else str(text))
    s = s[:100_000]
    secs = split_sections(s)
    order = [idx for idx, _ in secs]
    answer = extract_answer(s, t)
    return TemplateCheck(
        sections=[SECTIONS[i].name for i in order],
        in_order=order == list(range(len(SECTIONS))),
        answer=answer,
        answer_valid=t.is_valid_answer(answer) and bool([b for i, b in secs if i == ANSWER and b.strip()]),
    )
