"""Batched local generation with transformers: left padding, chat templates, greedy or sampling."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tagpr.generation.base import (Continuation, Generation, Prompt, SamplingParams, eos_token_ids, find_stop,
                                   render_prompt)

log = logging.getLogger(__name__)


def cache_kwarg(model: Any) -> str:
    """The name a transformers model's forward (and generate) takes a KV cache by: ``cache`` in recent
    transformers (``past_key_values`` is deprecated there: it warns, and goes in 5.40), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward or generate output carries, under either name (None when there is none)."""
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


class TransformersBackend:
    """Generate with a causal LM from transformers (the embedded SmolLM2 when ``model`` is None).

    Prompts are sorted by length and generated ``batch_size`` at a time (less padding), then put
    back in order.  Text prompts go through the tokenizer's chat template as one user turn unless
    ``chat=False`` or the tokenizer has no template.  Stop strings end each sequence as soon as they
    appear (``generate(stop_strings=...)``).

    With ``reuse_cache=True``, single-sequence calls (batch of one, ``n == 1``) keep the KV cache of
    their last few sequences and resume from the longest shared token prefix, so a controller that
    stops, injects text and resumes (RRP) does not recompute the prompt each time.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | None = None,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str | None = None,
        chat: bool = True,
        system_prompt: str | None = None,
        trust_remote_code: bool = False,
        model_obj: Any = None,
        tokenizer_obj: Any = None,
        reuse_cache: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tagpr.embedded import resolve_lm

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model_obj is not None:
            self.model, self.model_id = model_obj, getattr(model_obj, "name_or_path", "model")
        else:
            self.model_id = resolve_lm(model)
            default = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
            torch_dtype = getattr(torch, dtype) if dtype else default
            self.model = AutoModelForCausalLM.from_pretrained(
                self.model_id, dtype=torch_dtype, trust_remote_code=trust_remote_code
            ).to(self.device)
        self.model.eval()
        self.tokenizer = tokenizer_obj or AutoTokenizer.from_pretrained(self.model_id,
                                                                        trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.chat = chat and bool(getattr(self.tokenizer, "chat_template", None))
        self.system_prompt = system_prompt
        self.prefix_cache = PrefixKVCache() if reuse_cache else None

    def render(self, prompt: Prompt) -> str:
        """The exact text fed to the model for ``prompt``."""
        return render_prompt(self.tokenizer, prompt, self.chat, self.system_prompt)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        texts = [self.render(p) for p in prompts]
        return self.generate_text(texts, params)

    def continue_generation(self, requests: Sequence[Continuation], params: SamplingParams) -> list[list[Generation]]:
        """Resume each prompt's assistant turn after its partial text."""
        return self.generate_text([self.render(p) + partial for p, partial in requests], params)

    def option_logprobs(self, requests: Sequence[Continuation], options: Sequence[str]) -> list[list[float]]:
        """Log-probability (summed over its tokens) of each option as the continuation of each
        (prompt, partial turn): the prefix is encoded once and each option reuses its KV cache."""
        import torch

        option_ids = [self.tokenizer.encode(o, add_special_tokens=False) or [self.tokenizer.eos_token_id]
                      for o in options]
        out = []
        with torch.inference_mode():
            for prompt, partial in requests:
                ids = self.tokenizer.encode(self.render(prompt) + partial, add_special_tokens=False)
                res = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
                cache, first = returned_cache(res), torch.log_softmax(res.logits[0, -1].float(), -1)
                scores = []
                for opt in option_ids:
                    lp = float(first[opt[0]])
                    if len(opt) > 1:
                        r2 = self.model(input_ids=torch.tensor([opt[:-1]], device=self.device),
                                        use_cache=True, **{cache_kwarg(self.model): cache})
                        lps = torch.log_softmax(r2.logits[0].float(), -1)
                        lp += float(sum(lps[j, opt[j + 1]] for j in range(len(opt) - 1)))
                        cache.crop(-(len(opt) - 1))
                    scores.append(lp)
                out.append(scores)
        return out

    def generate_text(self, texts: Sequence[str], params: SamplingParams) -> list[list[Generation]]:
        """Generate from already rendered texts (chat template applied or not)."""
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed)
        lengths = [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out: list[list[Generation]] = [[] for _ in texts]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = [texts[i] for i in idx]
            for i, gens in zip(idx, self._generate_batch(batch, params)):
                out[i] = gens
        return out

    def _generate_batch(self, batch: list[str], params: SamplingParams) -> list[list[Generation]]:
        import torch

        enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if params.stop:
            kwargs["stopping_criteria"] = _stop_on_text(self.tokenizer, params.stop, enc["input_ids"].shape[1])
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        reuse = self.prefix_cache is not None and len(batch) == 1 and params.n == 1
        if reuse:
            cache = self.prefix_cache.take(enc["input_ids"][0].tolist())
            if cache is not None:
                kwargs[cache_kwarg(self.model)] = cache
            kwargs["return_dict_in_generate"] = True
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        seqs = out.sequences if reuse else out
        kept = returned_cache(out) if reuse else None
        if kept is not None:
            self.prefix_cache.store(seqs[0].tolist(), kept)
        prompt_len = enc["input_ids"].shape[1]
        new = seqs[:, prompt_len:]
        eos_ids = set(eos_token_ids(self.model, self.tokenizer))
        results: list[list[Generation]] = []
        for b in range(len(batch)):
            n_prompt = int(enc["attention_mask"][b].sum())
            gens = []
            for s in range(params.n):
                row = new[b * params.n + s].tolist()
                n_tok = len(row)
                finish = "length"
                for j, tok in enumerate(row):
                    if tok in eos_ids:
                        n_tok, finish = j, "stop"
                        break
                text = self.tokenizer.decode(row[:n_tok], skip_special_tokens=True)
                text, matched = find_stop(text, params.stop)
                gens.append(Generation(text, n_prompt, n_tok, "stop" if matched else finish, matched))
            results.append(gens)
        return results


def _stop_on_text(tokenizer: Any, stops: Sequence[str], prompt_len: int) -> Any:
    """Stop each sequence once its generated text contains a stop string.

    (transformers' ``stop_strings`` precomputes tables over the whole vocabulary on every call, about
    3 s for a 49k vocabulary on CPU; decoding the last few tokens per step costs almost nothing.)"""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = max(8, max(len(s) for s in stops) + 4)  # tokens; a stop string is never longer in tokens than chars

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            tails = input_ids[:, max(prompt_len, input_ids.shape[1] - window) :]
            texts = tokenizer.batch_decode(tails, skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stops if s) for t in texts], device=input_ids.device)

    return StoppingCriteriaList([StopOnText()])


class PrefixKVCache:
    """KV caches of recent single sequences, reused from the longest shared token prefix.

    ``take`` removes the best entry (it is extended in place by the next ``generate``) and crops it to
    the shared prefix, keeping at least one new token to process; ``store`` keeps a finished
    sequence's cache.  ``reused_tokens`` counts prompt tokens that were not recomputed.
    """

    def __init__(self, capacity: int = 4, min_shared: int = 8):
        self.capacity, self.min_shared = capacity, min_shared
        self.entries: list[tuple[list[int], Any]] = []
        self.lookups = 0
        self.hits = 0
        self.reused_tokens = 0

    def take(self, ids: list[int]) -> Any:
        self.lookups += 1
        best, best_len = -1, 0
        for j, (cached_ids, _) in enumerate(self.entries):
            n = _shared_prefix(cached_ids, ids)
            if n > best_len:
                best, best_len = j, n
        keep = min(best_len, len(ids) - 1)
        if best < 0 or keep < self.min_shared:
            return None
        _, cache = self.entries.pop(best)
        remove = cache.get_seq_length() - keep
        if remove > 0:
            cache.crop(-remove)  # a negative count removes tokens in old and new transformers alike
        self.hits += 1
        self.reused_tokens += keep
        return cache

    def store(self, ids: list[int], cache: Any) -> None:
        n = cache.get_seq_length()
        self.entries.append((ids[:n], cache))
        if len(self.entries) > self.capacity:
            self.entries.pop(0)


def _shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
