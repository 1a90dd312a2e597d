"""GRPO rollouts through a fast generation engine: a ``rollout_func`` for TRL's ``GRPOTrainer``.

Before the first rollout of each optimizer step the engine takes the policy's *current* weights
(:meth:`~tagpr.generation.ct2.CTranslate2Backend.load_weights`; a LoRA policy is merged for the copy), so every
completion is sampled from the policy being trained.  The function returns what TRL expects of a rollout:
the prompt's token ids (the chat template TRL would apply), the completion's ids (ending with the EOS token
when the model ended it, so TRL counts it as not truncated) and the engine's per-token log-probabilities.

The engine runs in float32 by default, where its log-probabilities match the policy's to ~1e-5 (measured in
``benchmarks/rl_throughput.py``), so no importance-sampling correction is needed; a quantised engine
(``rollout_compute_type: int8``) samples from a slightly different distribution, and TRL's correction is tied
to vLLM, so measure before using it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from tagpr.generation.base import SamplingParams

log = logging.getLogger(__name__)


class EngineRollouts:
    """``rollout_func(prompts, trainer)`` sampling with ``backend`` (a :class:`CTranslate2Backend`)."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.synced_step: int | None = None
        self.sync_seconds: list[float] = []
        self.generate_seconds: list[float] = []
        self.completion_tokens = 0

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
        runs = _runs(prompt_ids)
        n = runs[0][1] if len({m for _, m in runs}) == 1 else 1
        unique = [prompt_ids[i] for i, _ in runs] if n > 1 else prompt_ids
        params = SamplingParams(max_new_tokens=int(args.max_completion_length),
                                temperature=float(args.temperature), top_p=float(getattr(args, "top_p", 1.0)),
                                n=n, seed=None)
        t0 = time.perf_counter()
        samples = self.backend.sample_ids(unique, params, logprobs=True)
        self.generate_seconds.append(time.perf_counter() - t0)
        completion_ids, logprobs = [], []
        for group in samples:
            for ids, lps, _ in group:
                completion_ids.append(list(ids))
                logprobs.append(list(lps))
                self.completion_tokens += len(ids)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    def stats(self) -> dict[str, float]:
        n = max(1, len(self.sync_seconds))
        return {"weight_syncs": len(self.sync_seconds), "sync_seconds_mean": sum(self.sync_seconds) / n,
                "generate_seconds_total": sum(self.generate_seconds), "completion_tokens": self.completion_tokens}


def _runs(rows: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(first index, length) of each run of equal consecutive rows."""
    runs: list[tuple[int, int]] = []
    for i, r in enumerate(rows):
        if runs and rows[runs[-1][0]] == r:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs
