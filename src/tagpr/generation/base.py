"""The generation-backend interface shared by every stage (evaluation, teachers, RRP, RL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union

Message = dict[str, str]
Prompt = Union[str, list[Message]]  # plain text (wrapped as one user turn when chat is on) or messages


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1  # samples per prompt
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" (end of sequence or a stop string) or "length"
    stop_reason: str | None = None  # the stop string that ended it, when the backend knows


Continuation = tuple[Prompt, str]  # (prompt, the assistant turn's text so far): resume that turn


class GenerationBackend(Protocol):
    name: str
    tokenizer: Any  # for prompt budgets; None when the backend has no local tokenizer

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """One list of ``params.n`` generations per prompt, in prompt order."""
        ...

    def continue_generation(self, requests: Sequence[Continuation], params: SamplingParams) -> list[list[Generation]]:
        """Resume each prompt's assistant turn after the given partial text (the text is not repeated
        in the result).  Used by controllers that stop a generation, inject text and resume."""
        ...


def as_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    if isinstance(prompt, str):
        msgs: list[Message] = [{"role": "user", "content": prompt}]
    else:
        msgs = [dict(m) for m in prompt]
    if system and not any(m.get("role") == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def render_prompt(tokenizer: Any, prompt: Prompt, chat: bool = True, system: str | None = None) -> str:
    """The exact text a local backend feeds its model for ``prompt``: the tokenizer's chat template with the
    generation prompt when ``chat`` (text prompts as one user turn), else the plain text (messages joined)."""
    if not chat:
        if isinstance(prompt, str):
            return prompt
        return "\n".join(m["content"] for m in prompt)
    return tokenizer.apply_chat_template(as_messages(prompt, system), tokenize=False, add_generation_prompt=True)


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; returns (text, stopped)."""
    text, matched = find_stop(text, stop)
    return text, matched is not None


def find_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string; returns (text, the stop string or None)."""
    cut, matched = len(text), None
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1 and (i < cut or (i == cut and matched is not None and len(s) > len(matched))):
                cut, matched = i, s
    return text[:cut], matched
