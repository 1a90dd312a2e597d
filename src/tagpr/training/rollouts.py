"""GRPO rollouts through a fast generation engine: a ``rollout_func`` for TRL's ``GRPOTrainer``.

Before the first rollout of each optimizer step the engine (OpenVINO GenAI or CTranslate2) takes the policy's
*current* weights (``load_weights``; a LoRA policy is merged for the copy), so every completion is sampled from
the policy being trained.  The function returns what TRL expects of a rollout: the prompt's token ids (the chat
template TRL would apply), the completion's ids (ending with the EOS token when the model ended it, so TRL
counts it as not truncated) and per-token log-probabilities: CTranslate2's (they match the policy's to ~1e-5),
or NaN, TRL's "not known", where the engine gives none (OpenVINO) or the completion is the teacher's.  TRL
reads them only for vLLM's importance sampling.

The engines run in float32 by default, where they sample from the policy's own distribution, so no
importance-sampling correction is needed; a quantised engine (``rollout_compute_type: int8`` on CTranslate2,
``bfloat16`` on OpenVINO) samples from a slightly different one, and TRL's correction is tied to vLLM, so
measure before using it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tagpr.generation.base import SamplingParams

log = logging.getLogger(__name__)


class EngineRollouts:
    """``rollout_func(prompts, trainer)`` sampling with ``backend`` (an OpenVINO or CTranslate2 backend).

    ``guides`` maps a prompt (:func:`prompt_key` of its messages) to teacher completions (token ids, ending with
    the end-of-turn token); with ``guide`` > 0, each whole group of such a prompt gets ``guide`` of them in place
    of as many samples (off-policy guidance), so only ``n - guide`` completions are sampled.

    ``greedy``: one completion of each whole group is the policy's greedy decoding of the prompt (what evaluation
    runs) and the rest are samples, so the group's advantages compare the samples with the answer the policy would
    give: where the greedy answer misses and a sample hits, the gradient moves the greedy decision itself."""

    def __init__(self, backend: Any, guides: dict[str, list[list[int]]] | None = None, guide: int = 0,
                 greedy: bool = False):
        self.backend = backend
        self.guides = guides or {}
        self.guide = guide if self.guides else 0
        self.greedy = bool(greedy)
        self._warned = False
        self.synced_step: int | None = None
        self.sync_seconds: list[float] = []
        self.generate_seconds: list[float] = []
        self.completion_tokens = 0
        self.guided_groups = 0
        self.groups = 0

    def sync(self, model: Any, step: int, seed: int | None = None) -> None:
        t0 = time.perf_counter()
        self.backend.load_weights(model, seed=seed)
        self.sync_seconds.append(time.perf_counter() - t0)
        self.synced_step = step

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, Any]:
        step = int(trainer.state.global_step)
        args = trainer.args
        rank = int(getattr(trainer.accelerator, "process_index", 0))
        if self.synced_step != step:  # the samples of a step depend on the run's seed, the step and the rank
            self.sync(trainer.accelerator.unwrap_model(trainer.model), step, seed=int(args.seed) + 1009 * step + 7919 * rank)
        tok = self.backend.tokenizer
        kw = dict(getattr(trainer, "chat_template_kwargs", None) or {})
        prompt_ids = [tok.encode(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True, **kw)
                                 if not isinstance(p, str) else p, add_special_tokens=False) for p in prompts]
        # TRL repeats each prompt num_generations times in a row: sample each group from one forward of its prompt
        runs, size = _runs(prompt_ids), int(args.num_generations)
        if all(m % size == 0 for _, m in runs):  # whole groups (the same prompt twice in a row: two groups)
            runs = [(j, size) for i, m in runs for j in range(i, i + m, size)]
        n = runs[0][1] if len({m for _, m in runs}) == 1 else 1
        unique = [prompt_ids[i] for i, _ in runs] if n > 1 else prompt_ids
        # guidance only where this process holds a whole group (TRL may split a group between processes)
        whole = n == size and n > 1
        guides = [self.guides.get(prompt_key(prompts[i]), []) for i, _ in runs] if whole and self.guide else \
            [[] for _ in unique]
        params = SamplingParams(max_new_tokens=int(args.max_completion_length),
                                temperature=float(args.temperature), top_p=float(getattr(args, "top_p", 1.0)),
                                n=n, seed=None)
        samples: list[Any] = [[] for _ in unique]
        greedy = self.greedy and whole
        if self.greedy and not whole and not self._warned:  # TRL split a group between processes
            log.warning("greedy: true needs whole groups on each process; this one holds parts of groups, so all its "
                        "completions are samples (and greedy/<component> logs samples)")
            self._warned = True
        t0 = time.perf_counter()
        if greedy:  # one greedy completion first in each group: the policy's own answer
            got = self.backend.sample_ids(unique, replace(params, n=1, temperature=0.0), logprobs=True)
            for j, group in enumerate(got):
                samples[j] = list(group[:1])
        # groups without a chain are sampled whole; guided ones give `guide` of their places to the teacher
        for idx, count in (([j for j, c in enumerate(guides) if not c], n - greedy),
                           ([j for j, c in enumerate(guides) if c], n - self.guide - greedy)):
            if idx and count > 0:
                got = self.backend.sample_ids([unique[j] for j in idx], replace(params, n=count), logprobs=True)
                for j, group in zip(idx, got):
                    samples[j] += list(group)
        self.generate_seconds.append(time.perf_counter() - t0)
        completion_ids, logprobs = [], []
        for j, group in enumerate(samples):
            for ids, lps, _ in group:
                completion_ids.append(list(ids))
                logprobs.append(list(lps))
                self.completion_tokens += len(ids)
            for h in range(self.guide if guides[j] else 0):  # the teacher's chains, in turn (log-probs: unknown)
                ids = guides[j][(step + h) % len(guides[j])]
                completion_ids.append(list(ids))
                logprobs.append([float("nan")] * len(ids))
        self.groups += len(samples) if n > 1 else 0
        self.guided_groups += sum(1 for c in guides if c)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    def stats(self) -> dict[str, float]:
        n = max(1, len(self.sync_seconds))
        out = {"weight_syncs": len(self.sync_seconds), "sync_seconds_mean": sum(self.sync_seconds) / n,
               "generate_seconds_total": sum(self.generate_seconds), "completion_tokens": self.completion_tokens}
        if self.guide:
            out["guided_groups"] = self.guided_groups
            out["groups"] = self.groups
        return out


def prompt_key(messages: Any) -> str:
    """The key a prompt's guides are stored under: its messages (or text) as canonical JSON."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def guide_completions(records: Sequence[dict[str, Any]], prompt_of: Any, tok: Any,
                      max_tokens: int) -> dict[str, list[list[int]]]:
    """Teacher completions per prompt: each chain record's chain as token ids ending with the end-of-turn token
    (as SFT taught it), under the key of ``prompt_of(record)``; chains longer than ``max_tokens`` are left out."""
    eos = tok.eos_token_id
    out: dict[str, list[list[int]]] = {}
    for r in records:
        ids = tok.encode(str(r["chain"]), add_special_tokens=False) + ([eos] if eos is not None else [])
        if len(ids) <= max_tokens:
            out.setdefault(prompt_key(prompt_of(r)), []).append(ids)
    return out


def _runs(rows: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(first index, length) of each run of equal consecutive rows."""
    runs: list[tuple[int, int]] = []
    for i, r in enumerate(rows):
        if runs and rows[runs[-1][0]] == r:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs
