"""tagpr's GRPO trainer: TRL's ``GRPOTrainer`` with two changes that make a step cheaper on small compute
(and, as an option, positive-only advantages: ``tagpr_grpo_trainer(positive_only=True)``).

1. **Each group's prompt forwarded once** in the training pass (``shared_prompt``).
2. **Zero-variance groups dropped** before the training pass (``drop_zero_variance``, DAPO's dynamic
   sampling without the refill): a group whose completions all earned the same reward has zero advantage, so
   it adds nothing but tokens to the policy-gradient loss; it is left out, and the loss is normalised over the
   informative groups' tokens.  The share of groups dropped is logged per step (``zero_variance/dropped``).
   Under several processes every process keeps as many rows as the one keeping the most (TRL gathers per-row
   metrics), the extra rows masked out, and the loss is normalised over every process's kept tokens.

The shared prompt pass:

A GRPO batch holds ``num_generations`` completions of each prompt.  TRL scores every row as one padded
sequence, prompt and completion, so a prompt of ~400 tokens is forwarded (and back-propagated through) once per
completion.  Here the rows that share a prompt are scored together: the prompt (all but its last token) runs
once and fills a KV cache, the cache is repeated for the group's rows, and the completions run on top of it.
The log-probabilities are those of the padded full-sequence pass (RoPE is relative, so the left padding's
position shift changes nothing but rounding) and gradients flow into the prompt's keys and values through the
repeated cache, so the update is the same (``tests/test_rl.py`` checks both to 1e-5).  On 16 rows of ~390 +
~150 tokens the pass handles ~5k tokens instead of ~9k (``benchmarks/rl_throughput.py``).

The shared pass is used for text-only policies with a ``past_key_values``/``cache`` forward in a single process;
anything else (images, MoE aux loss, rows that share no prompt, several processes: under DDP each forward call is
a collective, and the shared pass makes a number of calls that depends on the process's prompts) takes TRL's own
pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tagpr.generation.hf import cache_kwarg

_MULTIMODAL = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
               "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def prompt_groups(prompt_ids: Any, prompt_mask: Any) -> list[list[int]]:
    """Row indices grouped by their (unpadded) prompt, in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in range(prompt_ids.size(0)):
        key = tuple(prompt_ids[i][prompt_mask[i].bool()].tolist())
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _base(model: Any) -> Any:
    """The transformers model under a DDP wrapper (several processes) and/or a PEFT wrapper (the model itself
    otherwise)."""
    model = getattr(model, "module", model)  # torch's DistributedDataParallel keeps the model as .module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def grouped_logps_and_entropies(model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int,
                                compute_entropy: bool = False,
                                groups: list[list[int]] | None = None) -> tuple[Any, Any]:
    """Per-token log-probs (and entropies) of the last ``logits_to_keep`` tokens of each row, as TRL's
    ``_get_per_token_logps_and_entropies`` computes them, with each distinct prompt forwarded once.

    ``model`` carries TRL's fused LM head (``model(..., labels=..., fused_lm_head=True)``); ``groups`` are the
    rows' :func:`prompt_groups` when the caller has them already."""
    import torch
    from transformers import DynamicCache

    n_prompt = input_ids.size(1) - logits_to_keep
    prompt_ids, prompt_mask = input_ids[:, :n_prompt], attention_mask[:, :n_prompt]
    completion_ids, completion_mask = input_ids[:, n_prompt:], attention_mask[:, n_prompt:]
    cache_kw = cache_kwarg(_base(model))
    config = _base(model).config
    order: list[int] = []
    logps, entropies = [], []
    for rows in groups if groups is not None else prompt_groups(prompt_ids, prompt_mask):
        idx = torch.tensor(rows, device=input_ids.device)
        prompt = prompt_ids[rows[0]][prompt_mask[rows[0]].bool()]
        n, length = len(rows), prompt.size(0)
        cache = DynamicCache(config=config)
        if length > 1:
            model(input_ids=prompt[None, :-1], **{cache_kw: cache}, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(n)
        ids = torch.cat([prompt[-1:].expand(n, 1), completion_ids[idx]], dim=1)
        mask = torch.cat([torch.ones(n, length, dtype=attention_mask.dtype, device=attention_mask.device),
                          completion_mask[idx]], dim=1)
        labels = ids.masked_fill(mask[:, length - 1:] == 0, -100)
        labels[:, 0] = -100
        kw = {cache_kw: cache} if length > 1 else {}
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, **kw)
        logps.append(out.log_probs[:, -logits_to_keep:])
        if compute_entropy:
            entropies.append(out.entropy[:, -logits_to_keep:])
        order += rows
    inverse = torch.empty(len(order), dtype=torch.long, device=input_ids.device)
    inverse[torch.tensor(order, device=input_ids.device)] = torch.arange(len(order), device=input_ids.device)
    lp = torch.cat(logps, dim=0)[inverse]
    ent = torch.cat(entropies, dim=0)[inverse] if compute_entropy else None
    return lp, ent


def informative_rows(advantages: Any, groups: list[list[int]], rows_alone: bool = False) -> list[int]:
    """Rows of the groups whose advantages are not all zero (in row order); ``rows_alone``: only the rows whose
    own advantage is not zero."""
    nonzero = {i for g in groups for i in g if float(advantages[i]) != 0.0}
    return sorted(nonzero if rows_alone else {i for g in groups if nonzero.intersection(g) for i in g})


def tagpr_grpo_trainer(base: type, shared_prompt: bool = True, drop_zero_variance: bool = True,
                       extra_logs: Callable[[], dict[str, float]] | None = None,
                       positive_only: bool = False) -> type:
    """A subclass of TRL's ``GRPOTrainer`` (``base``) with the shared prompt pass and/or zero-variance groups
    dropped (each only where it is exact: see the module docstring).  ``extra_logs()``: more training metrics for
    each log (the reward spreads), so they land in the Trainer's ``log_history`` with the rest.
    ``positive_only``: negative advantages are set to 0 (only the completions above their group's mean are
    reinforced, as in RAFT-style rejection sampling; nothing is pushed down), and with ``drop_zero_variance`` the
    rows left at 0 are dropped too, so the loss is normalised over the reinforced completions' tokens."""

    class TagPRGRPOTrainer(base):  # type: ignore[misc, valid-type]
        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if extra_logs is not None and self.model.training:
                logs = {**logs, **extra_logs()}
            super().log(logs, start_time)

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            if positive_only and self.model.training:
                out["advantages"] = out["advantages"].clamp(min=0.0)
            if not drop_zero_variance or not self.model.training:
                return out
            # only where the batch is not split further (one generation batch a step), there is no KL term and
            # the loss is normalised by the batch's token count
            if (self.args.steps_per_generation != 1 or self.beta != 0.0 or self.loss_type not in ("dapo", "cispo")
                    or any(k in out for k in _MULTIMODAL + ("tool_mask",))):
                return out
            import torch

            groups = prompt_groups(out["prompt_ids"], out["prompt_mask"])
            keep = informative_rows(out["advantages"], groups, rows_alone=positive_only)
            n_rows = out["advantages"].size(0)
            # the share of the whole batch (every process's rows): the decisions below are the same in every
            # process, so each process meets the same collectives
            kept_all, rows_all = self.accelerator.gather(
                torch.tensor([[len(keep), n_rows]], device=out["advantages"].device)).sum(0).tolist()
            self._metrics["train"]["zero_variance/dropped"].append(1.0 - kept_all / rows_all)
            if kept_all == rows_all:
                return out
            lengths = out["completion_mask"].sum(-1)
            if not keep:  # nothing to learn from: one short row keeps the step (its loss is zero)
                keep = [int(lengths.argmin())]
            # several processes: each keeps as many rows as the process keeping the most, since TRL gathers
            # per-row metrics; the rows added (the shortest dropped ones) are masked out, so they weigh nothing
            most = int(self.accelerator.gather(torch.tensor([len(keep)], device=lengths.device)).max())
            shortest = sorted(range(n_rows), key=lambda i: (int(lengths[i]), i))
            pad = [i for i in shortest if i not in keep][:most - len(keep)]
            keep = sorted(keep + pad)
            if len(keep) < n_rows:
                idx = torch.tensor(keep, device=out["advantages"].device)
                for k, v in list(out.items()):
                    if isinstance(v, torch.Tensor) and v.dim() > 0 and v.size(0) == n_rows:
                        out[k] = v[idx]
            if pad:
                out["completion_mask"] = out["completion_mask"].clone()
                out["completion_mask"][[keep.index(i) for i in pad]] = 0
            kept_tokens = out["completion_mask"].sum()
            out["num_items_in_batch"] = self.accelerator.gather(kept_tokens).sum()  # every process's kept tokens
            return out

        def _get_per_token_logps_and_entropies(self, model: Any, input_ids: Any, attention_mask: Any,
                                               logits_to_keep: int, batch_size: int | None = None,
                                               compute_entropy: bool = False, compute_aux_loss: bool = False,
                                               **kw: Any) -> Any:
            n_prompt = input_ids.size(1) - logits_to_keep
            groups = prompt_groups(input_ids[:, :n_prompt], attention_mask[:, :n_prompt])
            multimodal = any(kw.get(k) is not None for k in _MULTIMODAL)
            if not shared_prompt or compute_aux_loss or multimodal or len(groups) == input_ids.size(0):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                    compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **kw)
            with self.accelerator.autocast():
                lp, ent = grouped_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                      compute_entropy, groups)
            return lp, ent, None

    return TagPRGRPOTrainer
