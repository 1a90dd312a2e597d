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
    finish_reason: str = "stop"


class GenerationBackend(Protocol):
    name: str
    tokenizer: Any  # for prompt budgets; None when the backend has no local tokenizer

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """One list of ``params.n`` generations per prompt, in prompt order."""
        ...


def as_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    if isinstance(prompt, str):
        msgs: list[Message] = [{"role": "user", "content": prompt}]
    else:
        msgs = [dict(m) for m in prompt]
    if system and not any(m.get("role") == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; returns (text, stopped)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut], cut < len(text)
