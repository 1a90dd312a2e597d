"""The generation-backend interface shared by every stage (evaluation, teachers, RRP, RL)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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


def close_backend(backend: object) -> None:
    """Release what a backend holds (an engine's compiled model, its threads, an HTTP session) when it has a
    ``close``; a backend without one holds nothing that needs releasing."""
    closer = getattr(backend, "close", None)
    if callable(closer):
        closer()


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


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a sequence: the generation config's ``eos_token_id`` (one or several) and the
    tokenizer's end token.  ``model`` is a model id / directory (its ``generation_config.json`` is read) or a
    loaded model (its ``generation_config``)."""
    ids: set[int] = set()
    if isinstance(model, (str, os.PathLike)):
        from transformers import GenerationConfig

        try:
            eos = GenerationConfig.from_pretrained(model).eos_token_id
        except (OSError, ValueError):
            eos = None
    else:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


class CpuEngine:
    """What the CPU engines (OpenVINO, CTranslate2) share: opening the model id and its tokenizer with clear
    errors, rendering prompts, and ``generate`` / ``continue_generation`` over the engine's ``generate_text``."""

    name = "cpu"
    compute_types: tuple[str, ...] = ()

    def _open_model(self, model: str | None, compute_type: str, device: str | None, tokenizer_obj: Any,
                    trust_remote_code: bool, chat: bool, system_prompt: str | None, threads: int | None) -> None:
        import os

        from transformers import AutoTokenizer

        from tagpr.embedded import resolve_lm
        from tagpr.generation.converted import cores

        if compute_type not in self.compute_types:
            raise ValueError(f"compute type {compute_type!r} is not one of {', '.join(self.compute_types)}")
        if device not in (None, "cpu"):
            raise ValueError(f"the {self.name} backend here runs on the CPU (got device {device!r}); "
                             "on a GPU use --backend transformers or a vLLM server (--backend openai)")
        self.model_id = resolve_lm(model)
        if os.path.exists(str(model or "")) and not os.path.isfile(os.path.join(self.model_id, "config.json")):
            raise ValueError(f"{model}: not a model directory (no config.json)")
        self.compute_type = compute_type
        self.threads = threads or int(os.environ.get("TAGPR_THREADS", 0)) or cores()
        self.trust_remote_code = trust_remote_code
        self.tokenizer = tokenizer_obj or AutoTokenizer.from_pretrained(self.model_id,
                                                                        trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = chat and bool(getattr(self.tokenizer, "chat_template", None))
        self.system_prompt = system_prompt
        self.eos_ids = eos_token_ids(self.model_id, self.tokenizer)

    _tmp: Any = None  # the engine's own scratch directory (a tempfile.TemporaryDirectory), removed with it
    path: str | None = None  # the engine's copy of the model on disk (None for live weights held in memory)

    def _scratch(self, model: Any) -> Path:
        """Where the engine writes its own copy of a local checkpoint or a live policy (``path``): a new directory,
        in memory for a small model (:func:`~tagpr.generation.converted.fast_tmp`), made at the first call."""
        import tempfile

        from tagpr.generation.converted import fast_tmp

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"tagpr-{self.name}-", dir=fast_tmp(model))
            self.path = str(Path(self._tmp.name) / "m")
        return Path(str(self.path))

    def render(self, prompt: Prompt) -> str:
        """The exact text fed to the model for ``prompt``."""
        return render_prompt(self.tokenizer, prompt, self.chat, self.system_prompt)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        return self.generate_text([self.render(p) for p in prompts], params)

    def continue_generation(self, requests: Sequence[Continuation], params: SamplingParams) -> list[list[Generation]]:
        """Resume each prompt's assistant turn after its partial text."""
        return self.generate_text([self.render(p) + partial for p, partial in requests], params)

    def generate_text(self, texts: Sequence[str], params: SamplingParams) -> list[list[Generation]]:
        raise NotImplementedError
