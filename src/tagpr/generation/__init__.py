"""Generation backends: batched transformers (local) and OpenAI-compatible HTTP servers."""

from __future__ import annotations

from typing import Any

from tagpr.generation.base import Generation, GenerationBackend, Prompt, SamplingParams, as_messages

BACKENDS = ("transformers", "openai")


def make_backend(kind: str = "transformers", model: str | None = None, **kwargs: Any) -> GenerationBackend:
    """``transformers`` (local weights, embedded default when ``model`` is None) or ``openai``
    (any OpenAI-compatible server: vLLM, Ollama, a hosted API; ``base_url=...``)."""
    if kind in ("transformers", "hf", "local"):
        from tagpr.generation.hf import TransformersBackend

        return TransformersBackend(model, **kwargs)
    if kind in ("openai", "http"):
        from tagpr.generation.openai_http import OpenAIBackend

        if not model:
            raise ValueError("the openai backend needs --model (the server's model name)")
        return OpenAIBackend(model, **kwargs)
    raise ValueError(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["Generation", "GenerationBackend", "Prompt", "SamplingParams", "as_messages", "make_backend", "BACKENDS"]
