"""Batched local generation with transformers: left padding, chat templates, greedy or sampling."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tagpr.generation.base import Generation, Prompt, SamplingParams, apply_stop, as_messages

log = logging.getLogger(__name__)


class TransformersBackend:
    """Generate with a causal LM from transformers (the embedded SmolLM2 when ``model`` is None).

    Prompts are sorted by length and generated ``batch_size`` at a time (less padding), then put
    back in order.  Text prompts go through the tokenizer's chat template as one user turn unless
    ``chat=False`` or the tokenizer has no template.
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
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tagpr.embedded import resolve_lm

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model_obj is not None:
            self.model, self.model_id = model_obj, getattr(model_obj, "name_or_path", "model")
        else:
            self.model_id = resolve_lm(model)
            torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.model_id, dtype=torch_dtype, trust_remote_code=trust_remote_code
            ).to(self.device)
        self.model.eval()
        self.tokenizer = tokenizer_obj or AutoTokenizer.from_pretrained(self.model_id, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.chat = chat and bool(getattr(self.tokenizer, "chat_template", None))
        self.system_prompt = system_prompt

    def render(self, prompt: Prompt) -> str:
        """The exact text fed to the model for ``prompt``."""
        if not self.chat:
            if isinstance(prompt, str):
                return prompt
            return "\n".join(m["content"] for m in prompt)
        return self.tokenizer.apply_chat_template(
            as_messages(prompt, self.system_prompt), tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        texts = [self.render(p) for p in prompts]
        return self.generate_text(texts, params)

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
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        new = seqs[:, prompt_len:]
        eos_ids = self._eos_ids()
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
                text, stopped = apply_stop(text, params.stop)
                gens.append(Generation(text, n_prompt, n_tok, "stop" if stopped else finish))
            results.append(gens)
        return results

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, (list, tuple)) else [ids]) - {None}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids
