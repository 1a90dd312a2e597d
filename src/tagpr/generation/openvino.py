"""Fast CPU generation with OpenVINO GenAI (``--backend openvino``), behind the same interface as transformers.

The Hugging Face model is exported to an OpenVINO model with its KV cache kept as state (:func:`export`):
traced through ``openvino.convert_model`` with the cache as explicit inputs and outputs, then the cache made
internal with OpenVINO's own transformations (a ``beam_idx`` gather and ``MakeStateful``), the form that
OpenVINO GenAI's continuous-batching pipeline runs with paged attention.  The export is checked before use:
its logits must match the torch model's on a probe input.  The embedded model and hub ids are exported once
into ``$TAGPR_CACHE/openvino/<key>`` (:mod:`tagpr.generation.converted`); a local checkpoint (SFT, an RL
stage) is exported per use (~15 s for 135M) into a memory-backed temporary directory.

Prompts are rendered and tokenized by the transformers tokenizer, exactly as the other local backends do, and
the pipeline receives token ids; the generated ids are decoded the same way.  ``compute_type="float32"`` (the
default) runs the arithmetic and the KV cache in float32: greedy text matches transformers' and CTranslate2's
(tested); ``bfloat16`` is OpenVINO's own default on CPUs with bf16 instructions (faster, different text).

What it supports: greedy and sampled generation with ``n`` samples, stop strings, resumed assistant turns
(RRP), option scores (:meth:`OpenVINOBackend.option_logprobs`) and, for RL rollouts, live weight syncs
(:meth:`OpenVINOBackend.load_weights`) and token ids (:meth:`OpenVINOBackend.sample_ids`; no per-token
log-probabilities).  Only decoder-only models whose cache is one key and one value tensor per layer export
(Llama, Qwen2, Mistral, SmolLM); anything else is an :class:`ExportError` that names ``--backend ct2``
(``--backend auto`` then falls back to CTranslate2 by itself).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagpr.generation.base import Continuation, CpuEngine, Generation, SamplingParams, find_stop
from tagpr.generation.converted import cached_conversion, engine_module

log = logging.getLogger(__name__)

COMPUTE_TYPES = {"float32": ("f32", "f32"), "bfloat16": ("bf16", "bf16")}  # -> (inference precision, KV cache)
DONE = "openvino_model.xml"
OPTIONS_PER_FORWARD = 32  # option scoring: options per forward after the prompt's (one prefill each)
BATCHED_TOKENS = 8192  # tokens one scheduler step forwards (prefill chunks and decode rows together)
EXPORT_TOLERANCE = 1e-3  # max |logit difference| between the export and the torch model, per unit of the largest logit


class ExportError(ValueError):
    """A model OpenVINO cannot run as exported here (the architecture, or logits that differ from torch's)."""


def available() -> bool:
    """Whether OpenVINO GenAI is importable."""
    return engine_module("openvino_genai", "openvino", "openvino-genai", check_only=True)


def _require() -> Any:
    return engine_module("openvino_genai", "openvino", "openvino-genai")


# ------------------------------------------------------------------------------------------------ export
def _cache_wrapper(model: Any, n_layers: int) -> Any:
    """``model`` as a function of (input_ids, attention_mask, position_ids, past key and value of each layer)
    returning (logits, present key and value of each layer): the signature the exporter traces."""
    import torch
    from transformers.cache_utils import DynamicCache

    class WithCacheTensors(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple:
            cache = DynamicCache(config=self.model.config)
            if len(cache.layers) != n_layers:
                raise ValueError("the cache does not hold one key/value pair per layer")
            for i, layer in enumerate(cache.layers):  # fill each layer with the past tensors themselves
                layer.lazy_initialization(past[2 * i], past[2 * i + 1])
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
            q, kv = input_ids.shape[1], attention_mask.shape[1]
            rows = torch.arange(q).unsqueeze(1) + (kv - q)
            allowed = (torch.arange(kv).unsqueeze(0) <= rows)[None, None] & attention_mask.bool()[:, None, None, :]
            mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return WithCacheTensors()


def _convert(wrapper: Any, example: tuple, shapes: list) -> Any:
    """``convert_model`` of the wrapper, traced by OpenVINO's TorchScript decoder sharing the model's weights,
    without torch's own re-trace check (about a quarter of the export's time; the export is checked against the
    torch model's logits instead, :func:`_build_checked`); with ``convert_model``'s defaults where that decoder is
    not importable."""
    import openvino as ov

    try:
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder
    except ImportError:  # pragma: no cover - depends on the OpenVINO version
        return ov.convert_model(wrapper, example_input=example, input=shapes)
    decoder = TorchScriptPythonDecoder(wrapper, example_input=example, shared_memory=True,
                                       trace_kwargs={"check_trace": False})
    return ov.convert_model(decoder, input=shapes)


def _make_stateful(ov_model: Any, past_names: list[str], present_names: list[str]) -> None:
    """Keep the KV cache inside the model as state (what OpenVINO GenAI expects): a ``beam_idx`` input
    reorders the cache, ``MakeStateful`` pairs each past input with its present output, and each state
    starts as zeros of the batch's size."""
    import numpy as np
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    beam = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([-1]))
    beam.output(0).get_tensor().add_names({"beam_idx"})
    ov_model.add_parameters([beam])
    for name in past_names:
        port = ov_model.input(name)
        consumers = port.get_target_inputs()
        gathered = opset13.gather(port, beam, opset13.constant(0))
        for c in consumers:
            c.replace_source_output(gathered.output(0))
    ov_model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(ov_model, dict(zip(past_names, present_names)))
    ids = ov_model.input("input_ids")
    batch = opset13.gather(opset13.shape_of(ids, output_type="i64"), opset13.constant([0]), opset13.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() == "ReadValue":
            dims: list[Any] = [d.min_length for d in op.get_output_partial_shape(0)]
            dims[0] = batch
            dims = [opset13.constant(np.array([d], dtype=np.int64)) if isinstance(d, int) else d for d in dims]
            zeros = opset13.broadcast(opset13.constant(0.0, dtype=op.get_output_element_type(0)),
                                      opset13.concat(dims, axis=0))
            op.set_arguments([zeros])
    ov_model.validate_nodes_and_infer_types()


def export(model_dir: str, dest: Path, trust_remote_code: bool = False) -> None:
    """Write the OpenVINO copy of a Hugging Face causal LM (model, tokenizer and detokenizer, configs) to
    ``dest``; ValueError when the architecture does not export or the export's logits differ."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa",
                                                     trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ValueError(f"{model_dir}: cannot load this model ({type(e).__name__}: {e})") from e
    _save(build_model(model, model_dir), model_dir, dest, trust_remote_code)


def build_model(model: Any, model_dir: str) -> Any:
    """The checked, stateful OpenVINO model of a torch causal LM.  Its weight constants share the torch
    parameters' memory (``convert_model`` shares them), so saving it again writes the weights as they are then."""
    training = model.training
    model.eval()
    try:
        return _build_checked(model, model_dir)
    finally:
        model.train(training)


def _build_checked(model: Any, model_dir: str) -> Any:
    import numpy as np
    import openvino as ov
    import torch

    try:
        cfg = model.config.get_text_config(decoder=True)
        n_layers, n_kv = cfg.num_hidden_layers, cfg.num_key_value_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        wrapper = _cache_wrapper(model, n_layers)
        b, q, p = 2, 3, 2  # a probe with a past, so both the prompt and the decode paths are traced
        example = [torch.ones(b, q, dtype=torch.long), torch.ones(b, q + p, dtype=torch.long),
                   torch.arange(p, p + q).expand(b, q).contiguous()]
        example += [torch.zeros(b, n_kv, p, head_dim) for _ in range(2 * n_layers)]
        shapes = [ov.PartialShape([-1, -1])] * 3 + [ov.PartialShape([-1, n_kv, -1, head_dim])] * (2 * n_layers)
        import warnings

        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a deprecation notice about the cache's keyword, once per export
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's warnings about shapes it records as constants
                ov_model = _convert(wrapper, tuple(example), shapes)
        finally:
            hf_logging.set_verbosity(level)
    except Exception as e:
        raise ExportError(f"{model_dir}: cannot export this model to OpenVINO ({type(e).__name__}: {e}); "
                          "use --backend ct2 (RL: rollout_engine: ct2)") from e
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    for port, name in zip(ov_model.inputs, ["input_ids", "attention_mask", "position_ids"] + past):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits"] + present):
        port.get_tensor().set_names({name})
    _make_stateful(ov_model, past, present)
    # check: the export's logits equal the torch model's, for a prompt and for one decoding step after it
    probe = (torch.arange(1, 10).unsqueeze(0) * 7919) % max(2, cfg.vocab_size)
    exact = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    compiled = ov.Core().compile_model(ov_model, "CPU", exact)
    req = compiled.create_infer_request()
    got = []
    for lo, hi in ((0, 8), (8, 9)):
        got.append(req.infer({"input_ids": probe[:, lo:hi].numpy(), "attention_mask": np.ones((1, hi), np.int64),
                              "position_ids": np.arange(lo, hi)[None], "beam_idx": np.zeros(1, np.int32)})["logits"])
    with torch.no_grad():
        want = model(probe).logits.numpy()
    err = max(float(np.abs(got[0] - want[:, :8]).max()), float(np.abs(got[1] - want[:, 8:]).max()))
    scale = max(1.0, float(np.abs(want).max()))
    if not err <= EXPORT_TOLERANCE * scale:
        raise ExportError(f"{model_dir}: the OpenVINO export's logits differ from the model's by {err:.2g} "
                          f"(largest logit {scale:.3g}); use --backend ct2 (RL: rollout_engine: ct2)")
    return ov_model


def _save(ov_model: Any, model_dir: str, dest: Path, trust_remote_code: bool) -> None:
    """``ov_model`` with the tokenizer, detokenizer and configs of ``model_dir``, as the pipeline reads them."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, dest / DONE, compress_to_fp16=False)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    ov_tok, ov_detok = convert_tokenizer(tok, with_detokenizer=True)
    ov.save_model(ov_tok, dest / "openvino_tokenizer.xml")
    ov.save_model(ov_detok, dest / "openvino_detokenizer.xml")
    for name in ("config.json", "generation_config.json"):
        if (Path(model_dir) / name).is_file():
            shutil.copy(Path(model_dir) / name, dest / name)


def convert(model_dir: str, trust_remote_code: bool = False) -> Path:
    """The OpenVINO copy of a Hugging Face model directory or id, exported once into the cache."""
    _require()
    return cached_conversion("openvino", model_dir, "stateful-f32", DONE,
                             lambda dest: export(model_dir, dest, trust_remote_code), label="OpenVINO")


# ------------------------------------------------------------------------------------------------ backend
class OpenVINOBackend(CpuEngine):
    """Generate with OpenVINO GenAI's continuous-batching pipeline on the CPU (the embedded SmolLM2 when
    ``model`` is None).  All prompts of a call are scheduled together: prefill and decode steps of different
    sequences share one forward, and a finished sequence leaves the batch at once."""

    name = "openvino"
    compute_types = tuple(COMPUTE_TYPES)

    def __init__(
        self,
        model: str | None = None,
        batch_size: int = 64,
        compute_type: str = "float32",
        cache_gb: float = 2.0,
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

        og = _require()
        self._open_model(model, compute_type, device, tokenizer_obj, trust_remote_code, chat, system_prompt, threads)
        self.batch_size = batch_size
        precision, kv = COMPUTE_TYPES[compute_type]
        self.properties = {"INFERENCE_PRECISION_HINT": precision, "KV_CACHE_PRECISION": kv,
                           "INFERENCE_NUM_THREADS": self.threads}
        self.scheduler = og.SchedulerConfig()
        self.scheduler.cache_size = max(1, int(round(cache_gb)))
        self.scheduler.enable_prefix_caching = True  # prompts of one call share their instruction and system turn
        self.scheduler.max_num_batched_tokens = int(os.environ.get("TAGPR_OV_BATCHED_TOKENS", BATCHED_TOKENS))
        self.pipeline: Any = None
        self._scorer: Any = None
        # (the policy, its OpenVINO model, the parameters' storage addresses when traced, whether every weight of
        # the model is the policy's own memory: then a sync saves it again instead of tracing again)
        self._live: tuple[Any, Any, list[int], bool] | None = None
        self._draws = 0  # prompts sampled since the last sync (each takes the next seed)
        self.weight_syncs = 0
        self.seed: int | None = None
        if defer:  # weights come later through load_weights (RL syncs the policy before its first rollout)
            return
        if model_obj is not None:
            self.load_weights(model_obj)
            return
        if is_embedded(model) or not os.path.isdir(self.model_id):
            self.path = str(convert(self.model_id, trust_remote_code))  # exported once
        else:  # a local checkpoint: exported per use, not kept in the cache
            export(self.model_id, self._scratch(self.model_id), trust_remote_code)
        self._open()


    def _open(self) -> None:
        og = _require()
        self.pipeline = None  # free the old pipeline before the new one compiles
        self._scorer = None
        self.pipeline = og.ContinuousBatchingPipeline(self.path, self.scheduler, "CPU", self.properties)

    def close(self) -> None:
        """Free the pipeline (and the exported copy of a local checkpoint) now."""
        self.pipeline = None
        self._scorer = None
        self._live = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ------------------------------------------------------------------------------ text
    def _config(self, params: SamplingParams, stops: bool = True, seed: int | None = None) -> Any:
        """The pipeline's settings for one prompt; sampled with seed ``seed`` (default ``params.seed``)."""
        og = _require()
        cfg = og.GenerationConfig()
        cfg.max_new_tokens = params.max_new_tokens
        cfg.stop_token_ids = set(self.eos_ids)
        if stops and params.stop:
            cfg.stop_strings = {s for s in params.stop if s}
            cfg.include_stop_str_in_output = True  # cut below, where the stop string is reported
        if params.greedy:
            cfg.do_sample = False
        else:
            cfg.do_sample = True
            cfg.temperature = params.temperature
            cfg.top_p = params.top_p
            cfg.num_return_sequences = params.n
            seed = params.seed if seed is None else seed
            if seed is not None:
                cfg.rng_seed = seed
        return cfg

    def _configs(self, params: SamplingParams, count: int, first: int = 0, stops: bool = True) -> list[Any]:
        """Settings for ``count`` prompts: prompt ``i`` of a call samples from seed ``seed + first + i`` (the
        call's seed: ``params.seed``; else the last weight sync's, continued over the prompts sampled since), so
        different prompts draw independent samples and a run is reproducible."""
        if params.seed is not None:
            seed = params.seed
        else:  # RL: the sync's seed, continued over the calls since it
            seed, first = self.seed, first + self._draws
            self._draws += count
        return [self._config(params, stops, None if seed is None else seed + first + i) for i in range(count)]

    def _run(self, rows: Sequence[Sequence[int]], configs: list[Any]) -> list[list[tuple[list[int], bool]]]:
        """Each row's generated ids, with whether the pipeline ended it at a stop string or token."""
        import numpy as np
        import openvino as ov

        if not rows:
            return []
        results = self.pipeline.generate([ov.Tensor(np.array([list(row)], dtype=np.int64)) for row in rows],
                                         configs)
        out = []
        for res in results:
            reasons = [str(r).rsplit(".", 1)[-1].upper() for r in getattr(res, "finish_reasons", [])]
            out.append([(list(seq), k < len(reasons) and reasons[k] == "STOP")
                        for k, seq in enumerate(res.m_generation_ids)])
        return out

    def _generation(self, prompt_ids: Sequence[int], seq: list[int], params: SamplingParams,
                    trim: bool = False) -> Generation:
        """A sequence cut at a stop string counts its tokens up to the one that completes it (``trim``: it was
        generated again without the pipeline's stop strings; the pipeline may also miss a stop string split over
        more tokens than it checks)."""
        ended = bool(seq) and seq[-1] in self.eos_ids
        body = seq[:-1] if ended else seq
        text, matched = find_stop(self.tokenizer.decode(body, skip_special_tokens=True), params.stop)
        if matched is not None and (trim or not ended):
            # the shortest prefix whose text holds a stop string (a longer one holds it too: binary search)
            lo, hi = 1, len(body)
            while lo < hi:
                mid = (lo + hi) // 2
                if find_stop(self.tokenizer.decode(body[:mid], skip_special_tokens=True), params.stop)[1]:
                    hi = mid
                else:
                    lo = mid + 1
            body, ended = body[:lo], False
        reason = "stop" if ended or matched else "length"
        return Generation(text, len(prompt_ids), len(body), reason, matched)

    def generate_text(self, texts: Sequence[str], params: SamplingParams) -> list[list[Generation]]:
        """Generate from already rendered texts (chat template applied or not).

        Stop strings are checked by the pipeline as it decodes and again here on the decoded text, which is cut
        at the first one.  When the pipeline ends a sequence at a stop string that begins exactly where a new
        token begins, it leaves that token out (OpenVINO GenAI 2026.4), so the stop string is not in the text:
        such a prompt is generated again without the pipeline's stop strings, and cut here."""
        if not texts:
            return []
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        step = max(1, self.batch_size)
        out: list[list[Generation]] = []
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            runs = self._run(chunk, self._configs(params, len(chunk), start))
            lost = [i for i, run in enumerate(runs) if any(
                stopped and not (seq and seq[-1] in self.eos_ids) and
                find_stop(self.tokenizer.decode(seq, skip_special_tokens=True), params.stop)[1] is None
                for seq, stopped in run)]
            if lost:
                configs = self._configs(params, len(chunk), start, stops=False)
                again = self._run([chunk[i] for i in lost], [configs[i] for i in lost])
                for i, run in zip(lost, again):
                    runs[i] = run
            for i, (prompt_ids, run) in enumerate(zip(chunk, runs)):
                row = [self._generation(prompt_ids, seq, params, trim=i in lost) for seq, _ in run[:params.n]]
                while len(row) < params.n:  # greedy: every sample is the same
                    row.append(Generation(**vars(row[0])))
                out.append(row)
        return out

    # ------------------------------------------------------------------------------ RL rollouts
    def load_weights(self, model_obj: Any, seed: int | None = None) -> None:
        """Take a live policy's current weights (an RL policy after an optimizer step; a PEFT model is merged for
        the copy and unmerged after).  The policy is traced once; where the traced model's weight constants all
        share the policy's parameter memory (checked both ways), each later sync writes the current weights to a
        memory-backed directory and compiles the pipeline again, without tracing; otherwise (a weight the
        converter copied or folded) every sync traces again, slower but never stale.  ``seed`` seeds the samples
        drawn from these weights."""
        import openvino as ov

        if seed is not None:
            self.seed = seed
        self._draws = 0
        merged = hasattr(model_obj, "merge_adapter") and hasattr(model_obj, "peft_config")
        if merged:
            model_obj.merge_adapter()
        base = model_obj.get_base_model() if merged else model_obj
        try:
            if self._live is None or self._live[0] is not base or self._live[2] != _storages(base) or \
                    not self._live[3]:
                ov_model = build_model(base, self.model_id)
                unshared = _unshared_weights(ov_model, base)
                if unshared and self._live is None:
                    log.info("%s: %d weights of the OpenVINO model (%s) are copies, not the policy's memory: "
                             "the policy is traced again at every sync", self.model_id, len(unshared),
                             ", ".join(unshared[:3]))
                _save(ov_model, self.model_id, self._scratch(base), self.trust_remote_code)
                self._live = (base, ov_model, _storages(base), not unshared)
            else:
                ov.save_model(self._live[1], Path(self.path) / DONE, compress_to_fp16=False)
            self._open()
        finally:
            if merged:
                model_obj.unmerge_adapter()
        self.weight_syncs += 1

    def sample_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                   logprobs: bool = False) -> list[list[tuple[list[int], list[float], str]]]:
        """``params.n`` continuations of each token prompt: (token ids, per-token log-probs, finish) with finish
        ``eos`` (the ids end with the end-of-sequence token), ``stop`` or ``length``.  The pipeline does not
        report per-token log-probabilities, so with ``logprobs`` each token's is NaN, TRL's value for "not
        known" (TRL reads them only for vLLM's importance sampling).  Prompt ``i`` of a call samples with
        seed ``seed + i``: the samples of different prompts are independent."""
        runs = self._run(prompt_ids, self._configs(params, len(prompt_ids)))
        out = []
        for run in runs:
            group = []
            for seq, _ in run[:params.n]:
                finish = "eos" if seq and seq[-1] in self.eos_ids else \
                    "length" if len(seq) >= params.max_new_tokens else "stop"
                group.append((seq, [float("nan")] * len(seq) if logprobs else [], finish))
            while len(group) < params.n:  # greedy: every sample is the same
                group.append((list(group[0][0]), list(group[0][1]), group[0][2]))
            out.append(group)
        return out

    def option_logprobs(self, requests: Sequence[Continuation], options: Sequence[str]) -> list[list[float]]:
        """Log-probability (summed over its tokens) of each option as the continuation of each
        (prompt, partial turn).  The prompt is forwarded once; its KV state is then gathered into one row per
        option (the model's ``beam_idx``), so the options (``OPTIONS_PER_FORWARD`` at a time) forward only their
        own tokens and hold logits for those alone."""
        import numpy as np
        import openvino as ov

        if self._scorer is None:
            self._scorer = ov.Core().compile_model(str(Path(self.path) / DONE), "CPU", self.properties)
        option_ids = [self.tokenizer.encode(o, add_special_tokens=False) or [self.tokenizer.eos_token_id]
                      for o in options]
        out = []
        for prompt, partial in requests:
            ids = self.tokenizer.encode(self.render(prompt) + partial, add_special_tokens=False)
            if not ids:
                ids = [self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None
                       else self.tokenizer.eos_token_id]
            past = len(ids) - 1  # the prompt's last token is forwarded with each option: its logits score token 1
            scores: list[float] = []
            for lo in range(0, len(option_ids), OPTIONS_PER_FORWARD):
                chunk = option_ids[lo:lo + OPTIONS_PER_FORWARD]
                req = self._scorer.create_infer_request()
                req.reset_state()
                if past:
                    req.infer({"input_ids": np.array([ids[:-1]], dtype=np.int64),
                               "attention_mask": np.ones((1, past), dtype=np.int64),
                               "position_ids": np.arange(past, dtype=np.int64)[None],
                               "beam_idx": np.zeros(1, dtype=np.int32)})
                width = max(len(o) for o in chunk)
                batch = np.zeros((len(chunk), width), dtype=np.int64)
                mask = np.zeros((len(chunk), past + width), dtype=np.int64)
                mask[:, :past] = 1
                for r, opt in enumerate(chunk):  # right-padded: positions stay those of the real tokens
                    batch[r, :len(opt)] = [ids[-1], *opt[:-1]]
                    mask[r, past:past + len(opt)] = 1
                logits = req.infer({"input_ids": batch, "attention_mask": mask,
                                    "position_ids": np.tile(np.arange(past, past + width), (len(chunk), 1)),
                                    "beam_idx": np.zeros(len(chunk), dtype=np.int32)})["logits"]
                for r, opt in enumerate(chunk):
                    rows = logits[r, :len(opt)].astype(np.float64)
                    logz = np.log(np.exp(rows - rows.max(-1, keepdims=True)).sum(-1)) + rows.max(-1)
                    scores.append(float(sum(rows[t, tok] - logz[t] for t, tok in enumerate(opt))))
            out.append(scores)
        return out


def _storages(model: Any) -> list[int]:
    """The storage address of each of ``model``'s parameters (a parameter given new storage, e.g. by a LoRA
    variant's unmerge, no longer backs the traced model's constant)."""
    return [p.data_ptr() for p in model.parameters()]


def _unshared_weights(ov_model: Any, model: Any, min_elements: int = 4096) -> list[str]:
    """What the traced model does not share with ``model``: its weight-sized constants whose memory is not one of
    the parameters, and the (non-LoRA) parameters of any size that no constant's memory is."""
    import numpy as np

    params = {n: p.detach().numpy() for n, p in model.named_parameters() if "lora_" not in n}
    consts = [op for op in ov_model.get_ops() if op.get_type_name() == "Constant"]
    datas = [op.get_data() for op in consts]
    out = [op.get_friendly_name() for op, data in zip(consts, datas) if data.size >= min_elements and
           not any(np.shares_memory(data, p) for p in params.values() if p.size >= min_elements)]
    big = [d for d in datas if d.size > 1]
    out += [n for n, p in params.items() if not any(np.shares_memory(p, d) for d in big if d.size >= p.size)]
    return out
