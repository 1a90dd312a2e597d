"""Official LaMP prompt construction with its token budget.

The retrieved items are rendered with the task's item template (``tasks.py``) and joined with
``", and "``; the truncated field of each item shares the budget left after the input, which gets at
most ``factor`` (0.6) of ``max_length`` tokens.  Unused budget of a short item carries over to the
next ("saved tokens"), and when even that does not fit, the factor drops by 0.1 until it does, or the
bare input is returned: the official algorithm (``LaMP/prompts/prompts.py``).  Tokens are counted
with the generator's own tokenizer (the official code used FlanT5's), without special tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tagpr.tasks import LaMPTask, get_task


class TokenCounter(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


class WhitespaceTokenizer:
    """A tokenizer-free budget (one token per whitespace-separated word), e.g. for HTTP backends."""

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for w in text.split():
            if w not in self._vocab:
                self._vocab[w] = len(self._words)
                self._words.append(w)
            ids.append(self._vocab[w])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self._words[i] for i in ids)


class HFTokenCounter:
    """Adapter for a Hugging Face tokenizer (no special tokens, as the budget is for plain text)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def as_counter(tokenizer: Any | None) -> TokenCounter:
    if tokenizer is None:
        return WhitespaceTokenizer()
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode") and hasattr(tokenizer, "vocab_size"):
        return HFTokenCounter(tokenizer)
    return tokenizer


class _BudgetExceeded(Exception):
    pass


def render_items(
    task: LaMPTask | str, items: Sequence[Mapping[str, Any]], max_length: int, tokenizer: TokenCounter
) -> list[str]:
    """Render retrieved items within ``max_length`` tokens (official per-item budget with carry-over)."""
    t = get_task(task)
    n = len(items)
    overhead = t.template_overhead(n)
    if t.compose_words:
        overhead += len(tokenizer.encode(t.compose_words))
    per_item = (max_length - overhead) // n
    saved = 0
    rendered = []
    for item in items:
        fields = {k: ("" if v is None else str(v)) for k, v in item.items()}
        template_len = len(tokenizer.encode(t.item_template.format_map(_Fill(fields, text=" "))))
        budget = per_item + saved - template_len
        if budget <= 0:
            raise _BudgetExceeded
        ids = tokenizer.encode(fields.get(t.truncated_field, ""))[:budget]
        text = tokenizer.decode(ids) if len(ids) else ""
        rendered.append(t.item_template.format_map(_Fill(fields, text=text)))
        saved += per_item - template_len - len(ids)
    return rendered


class _Fill(dict):
    def __init__(self, fields: Mapping[str, str], text: str):
        super().__init__(fields)
        self["text"] = text

    def __missing__(self, key: str) -> str:
        return ""


def build_rag_prompt(
    task: LaMPTask | str,
    input_text: str,
    items: Sequence[Mapping[str, Any]],
    tokenizer: Any | None = None,
    max_length: int = 512,
    factor: float = 0.6,
) -> str:
    """The official retrieval-augmented prompt for ``input_text`` with the retrieved ``items``."""
    t = get_task(task)
    if not items:
        return input_text
    counter = as_counter(tokenizer)
    source_len = min(len(counter.encode(input_text)), max_length)
    while factor >= 0:
        reserved = min(source_len, int(factor * max_length))
        try:
            rendered = render_items(t, items, max_length - reserved, counter)
        except _BudgetExceeded:
            factor = round(factor - 0.1, 10)
            continue
        return t.compose(input_text, ", and ".join(rendered))
    return input_text


def build_prompt(
    task: LaMPTask | str,
    input_text: str,
    items: Sequence[Mapping[str, Any]] | None,
    tokenizer: Any | None = None,
    max_length: int = 512,
) -> str:
    """Zero-shot (no items: the input itself, as in LaMP) or retrieval-augmented prompt."""
    if not items:
        return input_text
    return build_rag_prompt(task, input_text, items, tokenizer, max_length)


def clip_text(text: str, max_words: int | None = None, max_chars: int | None = None) -> str:
    """``text`` cut to ``max_words`` words and ``max_chars`` characters (at a space where one is near), with
    `` ...`` where something was cut."""
    words = str(text).split()
    out = " ".join(words[:max_words] if max_words is not None else words)
    cut = max_words is not None and len(words) > max_words
    if max_chars is not None and len(out) > max_chars:
        head = out[:max_chars]
        out = head.rsplit(" ", 1)[0] if " " in head[max_chars // 2:] else head
        cut = True
    return out + " ..." if cut else out


def numbered_items(task: LaMPTask | str, items: Sequence[Mapping[str, Any]], max_words: int = 40,
                   max_chars: int | None = None) -> str:
    """Retrieved items as ``[1] ...`` lines, for prompts whose reasoning cites items by index (RRP's profile
    section, TagPR's ``examine_history``).  Each item's long field (the task's ``truncated_field``) is cut to
    ``max_words`` words and ``max_chars`` characters; its label, score or title stays whole, wherever the task's
    item template puts it (LaMP-2's tag comes after the description)."""
    t = get_task(task)
    lines = []
    for i, item in enumerate(items, 1):
        field = t.truncated_field
        clipped = {**item, field: clip_text(item.get(field, ""), max_words, max_chars)} if field in item else item
        lines.append(f"[{i}] {' '.join(t.render_item(clipped).split())}")
    return "\n".join(lines)


ITEMS_HEADER = "The user's past items:"
TASK_PREFIX = "Task: "


def shown_items(prompt: object) -> tuple[list[str], str | None]:
    """What a TagPR or RRP prompt showed, read back from it (an evaluation record's ``prompt``: chat messages or
    text): the ``[k]`` item lines of :func:`numbered_items` (item k at index k-1, without its ``[k]``) and the
    input after ``Task:`` (None when the prompt has no such line).  Never raises: prompts are stored data."""
    if isinstance(prompt, list):  # chat messages: the last user turn
        turns = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = turns[-1] if turns else ""
    text = prompt if isinstance(prompt, str) else ""
    items: list[str] = []
    lines = text.split("\n")
    start = end = lines.index(ITEMS_HEADER) + 1 if ITEMS_HEADER in lines else 0
    for line in lines[start:] if start else ():
        if not line.startswith(f"[{len(items) + 1}] "):
            break
        items.append(line.split("] ", 1)[1])
        end += 1
    at = next((i for i in range(end, len(lines)) if lines[i].startswith(TASK_PREFIX)), None)
    task_input = "\n".join(lines[at:])[len(TASK_PREFIX):] if at is not None else None
    return items, task_input


TAGPR_SYSTEM = "You reason about a user before answering for them."


TAGPR_ITEM_WORDS = 24  # words per shown item in TagPR prompts (SFT data and evaluation must agree)
# and characters: a real LaMP-3 review can open with a 400-character HTML video block of a few "words"
TAGPR_ITEM_CHARS = 160
# characters of the input in TagPR prompts: real LaMP-3 reviews run to 1,000+ words (some with HTML), which pushed
# 75 of 283 SFT examples past max_length 768 (their chain and answer cut off); tweets and abstracts are shorter
TAGPR_INPUT_CHARS = 1000


def build_tagpr_messages(task: LaMPTask | str, input_text: str, items: Sequence[Mapping[str, Any]] | None,
                         hint: str | None = None, max_item_words: int = TAGPR_ITEM_WORDS,
                         style: str = "full") -> list[dict[str, str]]:
    """TagPR's chat prompt: the tag grammar (``style``: ``full`` or ``compact``), the retrieved items as ``[k]``
    lines (each cut to ``max_item_words`` words and :data:`TAGPR_ITEM_CHARS` characters), the input (cut to :data:`TAGPR_INPUT_CHARS` characters).

    One definition for teachers (``hint`` = the gold, for rationalization), SFT data, RL and evaluation; a model
    trained on one style is prompted with it (:func:`model_prompt_style`)."""
    from tagpr.tags import format_instructions

    t = get_task(task)
    parts = [format_instructions(t, style), ""]
    if items:
        parts += [ITEMS_HEADER, numbered_items(t, items, max_item_words, TAGPR_ITEM_CHARS), ""]
    input_text = str(input_text)
    if len(input_text) > TAGPR_INPUT_CHARS:  # cut at the last space before the limit
        cut = input_text[:TAGPR_INPUT_CHARS]
        input_text = (cut.rsplit(" ", 1)[0] if " " in cut[TAGPR_INPUT_CHARS // 2:] else cut) + " ..."
    parts.append(f"{TASK_PREFIX}{input_text}")
    if hint is not None:
        parts += ["", f"The right answer is: {hint}. Write the reasoning that reaches it from the user's history, "
                      "as if you worked it out yourself; never say it was given."]
    return [{"role": "system", "content": TAGPR_SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


PROMPT_STYLE_FILE = "tagpr_prompt.json"  # written beside a trained model's weights: the prompt form it learned


def write_prompt_style(model_dir: str | Path, style: str) -> None:
    """Record in ``model_dir`` which TagPR prompt form its model was trained on."""
    from tagpr.tags import PROMPT_STYLES

    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {', '.join(PROMPT_STYLES)}")
    (Path(model_dir) / PROMPT_STYLE_FILE).write_text(json.dumps({"prompt_style": style}) + "\n")


def model_prompt_style(model: str | Path | None) -> str:
    """The TagPR prompt form a model was trained on (``full`` for a base model or a directory that does not say)."""
    path = Path(model) / PROMPT_STYLE_FILE if model else None
    if path is None or not path.is_file():
        return "full"
    try:
        style = json.loads(path.read_text()).get("prompt_style", "full")
    except (ValueError, AttributeError):
        raise ValueError(f"{path}: not a JSON object with a prompt_style") from None
    from tagpr.tags import PROMPT_STYLES

    return style if style in PROMPT_STYLES else "full"


def resolve_prompt_style(style: str, model: str | Path | None) -> str:
    """``auto`` = the style recorded with ``model``; ``full`` / ``compact`` as given."""
    return model_prompt_style(model) if style == "auto" else style
