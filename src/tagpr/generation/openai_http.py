"""Any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, hosted APIs) over HTTP."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tagpr.generation.base import Continuation, Generation, Prompt, SamplingParams, as_messages, find_stop

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class BackendError(RuntimeError):
    pass


class OpenAIBackend:
    """Chat (``/chat/completions``) or text (``/completions``) requests, ``concurrency`` at a time.

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` then ``http://127.0.0.1:8000/v1``; the key is read
    from the environment variable named by ``api_key_env`` (default ``OPENAI_API_KEY``; optional for
    local servers).  Transient failures (connection errors, 429, 5xx) are retried with exponential
    backoff and jitter, honouring ``Retry-After``.
    """

    name = "openai"
    tokenizer = None

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 120.0,
        chat: bool = True,
        system_prompt: str | None = None,
        backoff: float = 0.5,
        extra_body: dict[str, Any] | None = None,
    ):
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1").rstrip("/")
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.concurrency = max(1, concurrency)
        self.max_retries = max_retries
        self.chat = chat
        self.system_prompt = system_prompt
        self.backoff = backoff
        self.extra_body = extra_body or {}

    def close(self) -> None:
        self.client.close()

    def _payload(self, prompt: Prompt, params: SamplingParams,
                 partial: str | None = None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "n": params.n,
        }
        if params.top_p < 1.0:
            body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(self.extra_body)
        if self.chat:
            body["messages"] = as_messages(prompt, self.system_prompt)
            if partial is not None:
                # resume the assistant turn (vLLM / SGLang chat extensions)
                body["messages"].append({"role": "assistant", "content": partial})
                body.update(continue_final_message=True, add_generation_prompt=False)
            return "/chat/completions", body
        body["prompt"] = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        if partial is not None:
            body["prompt"] += partial
        return "/completions", body

    def _request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: str = ""
        for attempt in range(self.max_retries + 1):
            try:
                r = self.client.post(path, json=body)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        raise BackendError(f"{self.base_url}{path}: answer is not JSON: {r.text[:200]!r}") from None
                last = f"HTTP {r.status_code}: {r.text[:300]}"
                if r.status_code not in RETRY_STATUS:
                    raise BackendError(f"{self.base_url}{path}: {last}")
                retry_after = r.headers.get("retry-after")
                if retry_after and attempt < self.max_retries:
                    try:
                        time.sleep(min(float(retry_after), 60.0))
                        continue
                    except ValueError:
                        pass
            if attempt < self.max_retries:
                time.sleep(self.backoff * (2**attempt) * (1 + random.random() * 0.25))
        raise BackendError(f"{self.base_url}{path}: gave up after {self.max_retries + 1} attempts ({last})")

    def _one(self, prompt: Prompt, params: SamplingParams, partial: str | None = None) -> list[Generation]:
        path, body = self._payload(prompt, params, partial)
        data = self._request(path, body)
        usage = data.get("usage") or {}
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        gens = []
        for c in choices:
            if self.chat:
                msg = c.get("message") or {}
                text = msg.get("content") or ""
            else:
                text = c.get("text") or ""
            text, matched = find_stop(text, params.stop)
            # vLLM names the stop string that ended a choice in "stop_reason"; servers strip it from the text
            reason = c.get("stop_reason")
            if matched is None and isinstance(reason, str) and reason in params.stop:
                matched = reason
            gens.append(Generation(
                text=text,
                prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
                completion_tokens=int(usage.get("completion_tokens", 0) or 0) // max(1, len(choices)),
                finish_reason="stop" if matched else (c.get("finish_reason") or "stop"),
                stop_reason=matched,
            ))
        if not gens:
            raise BackendError(f"{self.base_url}{path}: no choices in answer {str(data)[:200]}")
        return gens

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        return self._map([(p, None) for p in prompts], params)

    def continue_generation(self, requests: Sequence[Continuation], params: SamplingParams) -> list[list[Generation]]:
        """Resume assistant turns: chat requests carry the partial turn with ``continue_final_message``
        (vLLM, SGLang); text requests append it to the prompt."""
        return self._map(list(requests), params)

    def _map(self, requests: Sequence[tuple[Prompt, str | None]], params: SamplingParams) -> list[list[Generation]]:
        if len(requests) <= 1 or self.concurrency == 1:
            return [self._one(p, params, partial) for p, partial in requests]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda r: self._one(r[0], params, r[1]), requests))
