"""Generation backends: OpenVINO GenAI and CTranslate2 (fast CPU), batched transformers (local, any device) and
OpenAI-compatible servers."""

from __future__ import annotations

from typing import Any

from tagpr.generation.base import Generation, GenerationBackend, Prompt, SamplingParams, as_messages, close_backend

BACKENDS = ("auto", "openvino", "ct2", "transformers", "openai")
LOCAL_BATCH = {"openvino": 64, "ct2": 64, "transformers": 16}  # default prompts per generate call of the local backends
_ALIASES = {"hf": "transformers", "local": "transformers", "http": "openai", "ctranslate2": "ct2", "ov": "openvino"}


def backend_name(kind: str) -> str:
    """The canonical name of a backend (an alias such as ``hf`` resolved; ``auto`` stays ``auto``); ValueError
    for an unknown one.  Imports nothing."""
    kind = _ALIASES.get(kind, kind)
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")
    return kind


def resolve_backend(kind: str) -> str:
    """The backend ``kind`` names: ``auto`` is ``openvino`` on a CPU machine with openvino-genai installed (else
    ``ct2`` with ctranslate2 installed), and ``transformers`` on a GPU."""
    kind = backend_name(kind)
    if kind == "auto":
        import torch

        from tagpr.generation import ct2, openvino

        if torch.cuda.is_available():
            return "transformers"
        return "openvino" if openvino.available() else "ct2" if ct2.available() else "transformers"
    return kind


def _ct2_available() -> bool:
    from tagpr.generation.ct2 import available

    return available()


def make_backend(kind: str = "auto", model: str | None = None, **kwargs: Any) -> GenerationBackend:
    """``openvino`` (OpenVINO GenAI on the CPU; ``compute_type=...``), ``ct2`` (CTranslate2 on the CPU),
    ``transformers`` (local weights, any device), ``auto`` (openvino, else ct2, when installed and there is no
    GPU; else transformers), or ``openai`` (any
    OpenAI-compatible server: vLLM, Ollama, a hosted API; ``base_url=...``).  The local backends take the
    embedded default model when ``model`` is None."""
    asked, kind = kind, resolve_backend(kind)
    if kind == "openvino":
        from tagpr.generation.openvino import ExportError, OpenVINOBackend

        kwargs.pop("reuse_cache", None)
        try:
            return OpenVINOBackend(model, **kwargs)
        except ExportError as e:
            if backend_name(asked) != "auto" or not _ct2_available():
                raise
            import logging

            logging.getLogger(__name__).warning("%s; generating with CTranslate2 instead", e)
            kind = "ct2"
    if kind == "ct2":
        from tagpr.generation.ct2 import CTranslate2Backend

        kwargs.pop("reuse_cache", None)  # transformers' KV reuse for RRP; CTranslate2 forwards prompts at once
        return CTranslate2Backend(model, **kwargs)
    if kind == "transformers":
        from tagpr.generation.hf import TransformersBackend

        kwargs.pop("compute_type", None)
        return TransformersBackend(model, **kwargs)
    from tagpr.generation.openai_http import OpenAIBackend

    if not model:
        raise ValueError("the openai backend needs --model (the server's model name)")
    return OpenAIBackend(model, **kwargs)


__all__ = ["Generation", "GenerationBackend", "Prompt", "SamplingParams", "as_messages", "backend_name",
           "close_backend", "make_backend", "resolve_backend", "BACKENDS"]
