"""Fast CPU generation with CTranslate2 (``--backend ct2``), behind the same interface as transformers.

The model is converted once from its Hugging Face weights (a hub id, or the embedded SmolLM2) into
``$TAGPR_CACHE/ct2/<key>`` (:mod:`tagpr.generation.converted`; the key covers the compute type); a local
checkpoint is converted per use.  A live torch model (an RL policy) is converted in memory with
:meth:`CTranslate2Backend.load_weights`, which RL rollouts call after every optimizer step.

What it supports: greedy and sampled generation with ``n`` samples, stop strings (checked on the decoded
tail after each token, so a sequence stops as soon as one appears), resumed assistant turns (RRP), option
scores (:meth:`option_logprobs`, by scoring each option's tokens after the prompt) and, for rollouts,
token ids with per-token log-probabilities (:meth:`sample_ids`).

``compute_type="float32"`` keeps the model's arithmetic (greedy text matches transformers'); ``int8``
quantises the weights (faster, different text: measure before using it; see
``benchmarks/generation_engines.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagpr.cpu import freed_memory_kept
from tagpr.generation.base import Continuation, CpuEngine, Generation, SamplingParams, find_stop
from tagpr.generation.converted import cached_conversion, engine_module
from tagpr.generation.converted import fast_tmp as _fast_tmp

log = logging.getLogger(__name__)

MIN_STATIC_PREFIX = 8  # shared prompt tokens worth forwarding once per batch (CTranslate2's static prompt)
# A generate call holds prompts within LENGTH_SPREAD tokens of its longest (CTranslate2 prefills a call only up to
# its shortest prompt and steps through the rest of each longer one token by token) and at most TOKEN_BUDGET tokens
# in flight (sequences x (longest prompt + new tokens)), which bounds memory.  Measured on TagPR evaluations, 2 cores
# (docs/cpu.md): quickstart's 48 prompts of 352-386 tokens in one call 90.7 s, in calls under 6,144 tokens 151 s;
# real LaMP-3's first 64 (346-774 tokens) 218.5 s at 3.4 GB against 241.1 s at 2.0 GB, and 8+ min at 8.8 GB in
# one call of 64.
TOKEN_BUDGET = 32768
LENGTH_SPREAD = 48
COMPUTE_TYPES = ("float32", "int8", "int8_float32", "int16", "bfloat16", "float16")


def available() -> bool:
    """Whether the ``ctranslate2`` package is importable."""
    return engine_module("ctranslate2", "ct2", "ctranslate2", check_only=True)


def _require() -> Any:
    return engine_module("ctranslate2", "ct2", "ctranslate2")


def _converter(model_dir: str, model_obj: Any = None, trust_remote_code: bool = False) -> Any:
    """A CTranslate2 Transformers converter; with ``model_obj`` it converts that live model (the config and
    tokenizer still come from ``model_dir``) instead of loading the weights again."""
    from ctranslate2.converters import TransformersConverter

    class LiveConverter(TransformersConverter):
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            if model_obj is not None:
                return model_obj
            return super().load_model(model_class, model_name_or_path, **kwargs)

    return LiveConverter(model_dir, low_cpu_mem_usage=True, trust_remote_code=trust_remote_code)


def _convert_to(model_dir: str, dest: Path, compute_type: str, trust_remote_code: bool) -> None:
    small = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors")) < 4 << 30 \
        if os.path.isdir(model_dir) else False
    try:
        with _no_gc_collect() if small else contextlib.nullcontext():  # a small model needs no per-layer gc
            _converter(model_dir, trust_remote_code=trust_remote_code).convert(
                str(dest), quantization=compute_type, force=True)
    except Exception as e:
        raise ValueError(f"{model_dir}: cannot convert this model to CTranslate2 ({e}); "
                         f"use --backend transformers") from e


def convert(model_dir: str, compute_type: str = "float32", trust_remote_code: bool = False) -> Path:
    """The CTranslate2 copy of a Hugging Face model directory or id, converted once into the cache."""
    _require()
    return cached_conversion("ct2", model_dir, compute_type, "model.bin", lambda dest: _convert_to(
        model_dir, dest, compute_type, trust_remote_code), label="CTranslate2")


class CTranslate2Backend(CpuEngine):
    """Generate with CTranslate2 on the CPU (the embedded SmolLM2 when ``model`` is None).

    Prompts are rendered exactly as :class:`~tagpr.generation.hf.TransformersBackend` renders them (the same
    chat template), so the two backends see the same tokens.  CTranslate2 sorts the batch by length, forwards
    each prompt at once and drops finished sequences from the batch as it decodes."""

    name = "ct2"
    compute_types = COMPUTE_TYPES

    def __init__(
        self,
        model: str | None = None,
        batch_size: int = 64,
        compute_type: str = "float32",
        token_budget: int = TOKEN_BUDGET,
        chat: bool = True,
        system_prompt: str | None = None,
        trust_remote_code: bool = False,
        threads: int | None = None,
        tokenizer_obj: Any = None,
        model_obj: Any = None,
        defer: bool = False,
        device: str | None = None,
        **_: Any,
    ):
        from tagpr.embedded import is_embedded

        self._ct2 = _require()
        self._open_model(model, compute_type, device, tokenizer_obj, trust_remote_code, chat, system_prompt, threads)
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.weight_syncs = 0
        self.seed: int | None = None
        if defer:  # weights come later through load_weights (RL syncs the policy before its first rollout)
            pass
        elif model_obj is not None:  # a live model (an RL policy): convert it in memory, nothing cached
            self.load_weights(model_obj)
        elif is_embedded(model) or not os.path.isdir(self.model_id):
            self.path = str(convert(self.model_id, compute_type, trust_remote_code))  # cached once
            self.generator = self._open(self.path)
        else:  # a local checkpoint (SFT, an RL stage): converted per use (~3 s for 135M), not kept in the cache
            _convert_to(self.model_id, self._scratch(self.model_id), compute_type, trust_remote_code)
            self.generator = self._open(self.path)

    generator: Any = None

    def close(self) -> None:
        """Stop the engine's worker threads and free its weights now, in the calling thread (rather than
        whenever the garbage collector reaches this object)."""
        gen, self.generator = self.generator, None
        if gen is not None:
            gen.unload_model()
            del gen

    def _open(self, path: str) -> Any:
        return self._ct2.Generator(path, device="cpu", compute_type=self.compute_type, intra_threads=self.threads)

    def _reseed(self, seed: int) -> None:
        """Draw the next samples from ``seed``.  CTranslate2 seeds each worker thread's generator once, when the
        engine loads, so a converted model is loaded again (~0.5 s) when the seed changes; calls with the same
        seed continue its stream (a run is reproducible from its start).  Live weights (RL) take the seed at
        their next :meth:`load_weights`."""
        self.seed = seed
        self._ct2.set_random_seed(seed)
        if self.path is not None:
            self.generator = None
            self.generator = self._open(self.path)

    # ------------------------------------------------------------------------------ weights
    def load_weights(self, model_obj: Any, seed: int | None = None) -> None:
        """Replace the engine's weights by those of a live transformers model of the same architecture (an
        RL policy after an optimizer step; a PEFT model is merged for the copy and unmerged after).  ``seed``
        seeds the samples drawn from these weights."""
        import torch

        if seed is not None:
            self._ct2.set_random_seed(seed)
            self.seed = seed
        self.path = None
        merged = False
        if hasattr(model_obj, "merge_adapter") and hasattr(model_obj, "peft_config"):
            model_obj.merge_adapter()
            merged = True
        base = model_obj.get_base_model() if merged else model_obj
        try:
            with torch.no_grad(), _no_gc_collect():
                base = _skeleton_sharing_weights(base)  # the converter deletes modules as it goes
                tmp = Path(tempfile.mkdtemp(prefix="tagpr-ct2-", dir=_fast_tmp(base)))
                try:
                    _converter(self.model_id, model_obj=base, trust_remote_code=self.trust_remote_code).convert(
                        str(tmp / "m"), quantization=self.compute_type, force=True)
                    self.generator = None  # free the old engine before the new one loads
                    self.generator = self._open(str(tmp / "m"))  # read into memory: the files can go
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            if merged:
                model_obj.unmerge_adapter()
        self.weight_syncs += 1

    # ------------------------------------------------------------------------------ text
    def generate_text(self, texts: Sequence[str], params: SamplingParams) -> list[list[Generation]]:
        """Generate from already rendered texts (chat template applied or not)."""
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        samples = self.sample_ids(ids, params)
        out: list[list[Generation]] = []
        for prompt_ids, gens in zip(ids, samples):
            row = []
            for toks, _, finish in gens:
                body = toks[:-1] if finish == "eos" else toks
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                text, matched = find_stop(text, params.stop)
                reason = "stop" if matched or finish in ("eos", "stop") else "length"
                row.append(Generation(text, len(prompt_ids), len(body), reason, matched))
            out.append(row)
        return out

    def sample_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                   logprobs: bool = False) -> list[list[tuple[list[int], list[float], str]]]:
        """``params.n`` continuations of each token prompt: (token ids, per-token log-probs (empty unless
        ``logprobs``), finish) with finish ``eos`` (the ids end with the end-of-sequence token), ``stop`` (a
        stop string appeared) or ``length``.

        Sampled with ``n > 1``, each prompt is forwarded once and its state copied to its ``n`` samples
        (CTranslate2's ``num_hypotheses``), which then decode as rows of one batch: a GRPO group pays for its
        prompt once.  Each sample ends alone (its end token or a stop string)."""
        if params.seed is not None and not params.greedy and params.seed != self.seed:
            self._reseed(params.seed)
        n = params.n
        hyp = n if n > 1 and not params.greedy else 1  # greedy samples are all the same: one row each
        prompts = [list(p) for p in prompt_ids]
        rows = prompts if hyp > 1 else [p for p in prompts for _ in range(n)]
        tokens = [self.tokenizer.convert_ids_to_tokens(p) for p in rows]
        steps: list[list[int]] = [[] for _ in range(len(prompts) * n)]  # sample j*n+h: prompt j, sample h
        lps: list[list[float]] = [[] for _ in steps]
        stopped = [False] * len(steps)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        per_call = max(1, self.batch_size // hyp)
        with freed_memory_kept():  # 3x faster decoding on 2 cores (tagpr/cpu.py)
            self._generate_rows(rows, tokens, order, per_call, hyp, params, steps, lps, stopped, logprobs)
        out: list[list[tuple[list[int], list[float], str]]] = []
        for j in range(len(prompts)):
            row = []
            for i in range(j * n, (j + 1) * n):
                toks = steps[i]
                if toks and toks[-1] in self.eos_ids:
                    finish = "eos"
                else:
                    finish = "stop" if stopped[i] else "length"
                row.append((toks, lps[i], finish))
            out.append(row)
        return out

    def _generate_rows(self, rows: list[list[int]], tokens: list[list[str]], order: list[int], per_call: int,
                       hyp: int, params: SamplingParams, steps: list[list[int]], lps: list[list[float]],
                       stopped: list[bool], logprobs: bool) -> None:
        """Decode ``rows`` in calls of ``per_call`` prompts (``order``: longest first), filling ``steps`` (token
        ids), ``lps`` (log-probs) and ``stopped`` (a stop string appeared) per sample."""
        stop = [s for s in params.stop if s]
        window = max(8, max((len(s) for s in stop), default=0) + 4)
        for idx in _calls(order, [len(r) for r in rows], per_call, hyp, params.max_new_tokens, self.token_budget):

            def on_step(step: Any, idx: list[int] = idx) -> bool:
                i = idx[step.batch_id] * hyp + (step.hypothesis_id if hyp > 1 else 0)
                steps[i].append(step.token_id)
                if logprobs:
                    lps[i].append(float(step.log_prob) if step.log_prob is not None else float("nan"))
                if stop and step.token_id not in self.eos_ids:
                    tail = self.tokenizer.decode(steps[i][-window:], skip_special_tokens=True)
                    if any(s in tail for s in stop):
                        stopped[i] = True
                        return True
                return False

            # a per-token Python callback only where one is needed (stop strings, per-token log-probs): it runs in
            # CTranslate2's worker threads, which then hold Python objects past the call
            streamed = bool(stop) or logprobs
            kwargs: dict[str, Any] = dict(max_length=params.max_new_tokens, include_prompt_in_result=False,
                                          end_token=self.eos_ids, return_end_token=True,
                                          return_scores=logprobs, num_hypotheses=hyp)
            if streamed:
                kwargs["callback"] = on_step
            if params.greedy:
                kwargs["sampling_topk"] = 1
            else:
                kwargs.update(sampling_topk=0, sampling_topp=params.top_p, sampling_temperature=params.temperature)
            shared = _shared_prefix([rows[i] for i in idx])
            if shared >= MIN_STATIC_PREFIX:  # forwarded once and cached (e.g. the system prompt and instruction)
                kwargs.update(static_prompt=tokens[idx[0]][:shared], cache_static_prompt=False)
                results = self.generator.generate_batch([tokens[i][shared:] for i in idx], **kwargs)
            else:
                results = self.generator.generate_batch([tokens[i] for i in idx], **kwargs)
            if not streamed:
                for b, res in enumerate(results):
                    for h, seq in enumerate(res.sequences_ids[:hyp]):
                        steps[idx[b] * hyp + h] = list(seq)

    def option_logprobs(self, requests: Sequence[Continuation], options: Sequence[str]) -> list[list[float]]:
        """Log-probability (summed over its tokens) of each option as the continuation of each
        (prompt, partial turn)."""
        option_ids = [self.tokenizer.encode(o, add_special_tokens=False) or [self.tokenizer.eos_token_id]
                      for o in options]
        batch, spans = [], []
        for prompt, partial in requests:
            ids = self.tokenizer.encode(self.render(prompt) + partial, add_special_tokens=False)
            for opt in option_ids:
                batch.append(self.tokenizer.convert_ids_to_tokens(ids + opt))
                spans.append(len(opt))
        results = self.generator.score_batch(batch, max_batch_size=self.batch_size, max_input_length=0)
        flat = [float(sum(r.log_probs[-m:])) for r, m in zip(results, spans)]
        k = len(option_ids)
        return [flat[i * k:(i + 1) * k] for i in range(len(requests))]


@contextlib.contextmanager
def _no_gc_collect() -> Any:
    """CTranslate2's converter runs ``gc.collect()`` after every layer (9 s of a 12 s sync for a 30-layer model);
    our skeleton frees nothing, so skip those calls while it converts."""
    import ctranslate2.converters.transformers as conv

    real = conv.gc
    conv.gc = types.SimpleNamespace(collect=lambda *a, **k: 0)
    try:
        yield
    finally:
        conv.gc = real


def _skeleton_sharing_weights(model: Any) -> Any:
    """A new module tree of ``model``'s architecture whose parameters *are* ``model``'s tensors (no copy).

    CTranslate2's converter frees each layer of the model it converts; converting this skeleton leaves the
    live model intact.  A PEFT model's merged base weights (``*.base_layer.weight``) take the plain names."""
    import torch
    from transformers import AutoModelForCausalLM

    state = {}
    for name, t in model.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = t
    with torch.device("meta"):
        skel = AutoModelForCausalLM.from_config(model.config)
    skel.load_state_dict(state, strict=False, assign=True)
    if getattr(model.config, "tie_word_embeddings", False):
        skel.tie_weights()
    missing = [n for n, p in skel.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"cannot copy {type(model).__name__} for CTranslate2: no weights for {missing[:3]}")
    return skel


def _calls(order: Sequence[int], lengths: Sequence[int], per_call: int, hyp: int, max_new: int,
           budget: int, spread: int = LENGTH_SPREAD) -> list[list[int]]:
    """``order`` (rows, longest first) cut into generate calls of at most ``per_call`` rows whose prompts are at
    most ``spread`` tokens shorter than the call's longest and whose sequences (``hyp`` per row) hold at most
    ``budget`` tokens in flight, counting each row at its call's longest prompt plus ``max_new`` (one row per
    call at least).  The spread matters most: CTranslate2 forwards a call's prompts at once only up to the
    shortest one and decodes the rest of every longer prompt token by token, one batched step per token."""
    calls: list[list[int]] = []
    for i in order:
        if calls and len(calls[-1]) < per_call and lengths[calls[-1][0]] - lengths[i] <= spread and \
                (len(calls[-1]) + 1) * hyp * (lengths[calls[-1][0]] + max_new) <= budget:
            calls[-1].append(i)
        else:
            calls.append([i])
    return calls


def _shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all rows share, leaving each row at least two tokens of its own (with one,
    CTranslate2 returns a longer row's remaining prompt tokens as if generated)."""
    if not rows:
        return 0
    n = min(len(r) for r in rows) - 2
    first = rows[0]
    for i in range(max(0, n)):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return max(0, n)
