"""``tagpr plan RECIPE``: check an RL or SFT recipe for GPUs without a GPU, without weights, offline.

The plan reads the model's ``config.json`` only (no weights) from, in order: a local model directory (the
embedded SmolLM2's converted directory in ``$TAGPR_CACHE`` when the recipe's model is null); a config-only
description shipped in ``tagpr/model_configs/`` (copies of the real ``config.json`` of ``Qwen/Qwen2.5-7B-Instruct``,
``Qwen/Qwen2.5-1.5B-Instruct`` and the embedded model); the hub through ``transformers.AutoConfig`` when it is
reachable.  From the config it counts the parameters exactly and estimates the memory each training GPU needs.

Parameters (Llama-style decoders: llama, mistral, qwen2, qwen3, gemma; others are counted the same way and say
so): embeddings ``V*h``; per layer the attention ``h*(nh*d) + 2*h*(nkv*d) + (nh*d)*h`` (grouped-query: ``nkv``
key/value heads of ``d = head_dim``) plus Qwen2's q/k/v biases (or ``attention_bias``), Qwen3's q/k norms, the
SwiGLU MLP ``3*h*i`` and two RMSNorms ``2*h``; a final norm ``h``; the LM head ``V*h`` unless tied.  For the
embedded SmolLM2 this is 134,515,008, exactly the count in its safetensors headers; Qwen2.5-7B gives 7,615,616,512
and Qwen2.5-1.5B 1,543,714,304 (the published 7.61B / 1.54B).  For all three shipped configs the counts, and the
LoRA count below, equal those of transformers' own model classes with PEFT built on the meta device (tested).

Memory per training GPU (GB = 10^9 bytes; weights are loaded in bf16 on a GPU, ``training/common.py``):

- **weights**: ``2*P`` (bf16); with LoRA plus ``4*P_lora`` (PEFT keeps adapters in fp32), ``P_lora = r * sum(d_in +
  d_out)`` over every linear layer of the trained decoder layers (``target_modules="all-linear"``: q, k, v, o,
  gate, up, down; not the LM head).  ZeRO-3 divides them by the N GPUs and adds the two largest modules it
  gathers at a time (the one running and the one prefetched, bf16).
- **gradients**: ``2*T`` for the ``T`` trained parameters of full fine-tuning (bf16), ``4*P_lora`` with LoRA;
  divided by N under ZeRO-2/3.  ``freeze_layers: F`` leaves the embeddings (and a tied head) and the lowest F
  layers out of ``T``, and their LoRA adapters too.
- **optimizer state**: AdamW, ``12*T`` for full fine-tuning (an fp32 master copy and two fp32 moments, as
  DeepSpeed keeps them; a plain bf16 Trainer without DeepSpeed keeps two bf16 moments, ``4*T``, so the plan is
  conservative there), ``8*P_lora`` with LoRA (two fp32 moments); divided by N under ZeRO-1/2/3; 0 when the
  accelerate config offloads it to the CPU.
- **reference model**: ``beta > 0`` without LoRA loads a second bf16 copy (LoRA disables the adapter instead).
- **activations** of the training pass, bf16, for ``tokens = batch_size * (prompt + max_completion_length)``
  (SFT: ``batch_size * max_length``) over the ``L - F`` trained layers.  One layer keeps per token ``4h`` (two
  norm inputs and outputs) ``+ (nh + 2*nkv)*d`` (q, k, v) ``+ nh*d`` (attention output) ``+ 4i`` (gate, up,
  SiLU, product) elements (attention by SDPA / flash: no ``seq^2`` term); LoRA adds ``7r`` and, with dropout,
  the dropped copy of each adapted layer's input.  With gradient checkpointing only each layer's input is kept
  (``h`` per token and layer) plus one layer's full activations while it is recomputed.
- **logits**: RL scores the completion positions, ``batch_size * (max_completion_length + 1) * V`` bf16 logits and
  their gradient (4 bytes each); SFT every position with the loss's fp32 copy and gradient (10 bytes each).
- **rollout KV cache** (RL without vLLM, ``model.generate``): the ``batch_size * grad_accum`` rollouts of one
  generation (TRL's ``steps_per_generation``) at ``2 * L * nkv * d * 2`` bytes per token.  Rollouts and the
  training pass do not overlap: the peak takes the larger.
- **vLLM**: colocated, ``vllm_gpu_memory_utilization * GPU memory`` on every training GPU (its own bf16 copy of
  the weights and its KV cache live in that share; the plan refuses a share smaller than the weights plus one
  sequence).  A vLLM server runs on GPUs of its own and is not in the table.
- **CUDA context, buffers**: a flat 2 GB (context, NCCL, allocator slack).

The layout (GPUs and sharding) comes from ``--accelerate-config``, else from the accelerate config the recipe's
launch line names (``accelerate launch --config_file ...`` in its header), else one GPU; ``--gpus N`` sets the
number of training processes.  accelerate's own estimator (``accelerate estimate-memory``) was not used: it builds
the model from the hub (``create_empty_model`` asks the hub for the repository first), so it does not work offline
from a config, and its "training using Adam" figure is the largest single part (the optimizer state), not the sum,
with no activations.

A recipe that does not fit is refused with one line that names what to change and what each change would need
(each change is planned again: LoRA, ZeRO-3 on more GPUs, gradient checkpointing, a smaller batch, a larger
colocated vLLM share, a vLLM server).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GB = 1e9
OVERHEAD = 2 * GB  # CUDA context, NCCL buffers, allocator slack
CHARS_PER_TOKEN = 4.0  # English TagPR prompts: 4.0-4.6 characters a token with SmolLM2's tokenizer (measured)
CHAT_OVERHEAD = 16  # tokens of the chat template around the system and user turns
VLLM_RESERVE = 1 * GB  # what vLLM keeps besides weights and KV cache (activations, CUDA graphs)
MODEL_CONFIGS = Path(__file__).with_name("model_configs")
KNOWN_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma")


# ------------------------------------------------------------------------------------------ model config
def shipped_configs() -> dict[str, Path]:
    """The config-only model descriptions shipped with tagpr, by hub id (``Qwen--Qwen2.5-7B-Instruct.json`` is
    ``Qwen/Qwen2.5-7B-Instruct``)."""
    return {p.stem.replace("--", "/"): p for p in sorted(MODEL_CONFIGS.glob("*.json"))}


def model_config(model: str | None, trust_remote_code: bool = False) -> tuple[dict[str, Any], str, Path | None]:
    """``(config dict, where it came from, local model directory or None)`` for ``model``, without weights."""
    from tagpr.embedded import EMBEDDED_LM, embedded_lm_dir, is_embedded

    shipped = shipped_configs()
    if is_embedded(model):
        d = embedded_lm_dir()
        if (d / "config.json").is_file():
            return _read_json(d / "config.json"), f"config.json of the converted model in {d}", d
        return _read_json(shipped[EMBEDDED_LM]), "config.json shipped with tagpr; not converted yet", None
    p = Path(str(model)).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"{p}: a directory without config.json (a model directory, a hub id, or one of the "
                             f"shipped configs: {', '.join(shipped)})")
        return _read_json(p / "config.json"), f"{p}/config.json", p
    if p.is_file() and p.suffix == ".json":
        return _read_json(p), str(p), None
    by_lower = {k.lower(): v for k, v in shipped.items()}
    if str(model).lower() in by_lower:
        return _read_json(by_lower[str(model).lower()]), "config.json shipped with tagpr, no weights", None
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(model), trust_remote_code=trust_remote_code)
    except Exception as e:  # offline, unknown id, gated: one line either way
        text = " ".join(str(e).split())
        why = ("the hub is not reachable (offline)" if re.search(r"offline|connect|resolve|network|timed? ?out", text, re.I)
               else f"the hub said: {text[:160]}")
        raise ValueError(f"{model}: no local config.json, not shipped with tagpr ({', '.join(shipped)}), and {why}; "
                         f"pass --model DIR with a config.json") from None
    return cfg.to_dict(), "config.json from the hub", None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the model config ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config must be a JSON object")
    return data


def safetensors_param_count(model_dir: Path, tied: bool) -> int | None:
    """Parameters in ``model_dir``'s safetensors files, from their headers only (no tensor is read); a tied LM
    head stored twice is counted once.  None when the directory has no safetensors."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, t in header.items():
            if name == "__metadata__" or (tied and name == "lm_head.weight"):
                continue
            total += math.prod(t["shape"])
    return total


# ------------------------------------------------------------------------------------------ shape
@dataclass(frozen=True)
class ModelShape:
    """What the parameter count and the memory estimate need from a decoder's config."""

    model_type: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        cfg = dict(cfg.get("text_config") or cfg) if "hidden_size" not in cfg else cfg
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                               "vocab_size") if not isinstance(cfg.get(k), int)]
        if missing:
            raise ValueError(f"the model config has no {', '.join(missing)}: not a decoder tagpr plan can count "
                             f"(model_type {cfg.get('model_type')!r})")
        mt = str(cfg.get("model_type", "?"))
        h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        bias = bool(cfg.get("attention_bias", False))
        return cls(model_type=mt, vocab=cfg["vocab_size"], hidden=h, layers=cfg["num_hidden_layers"], heads=nh,
                   kv_heads=cfg.get("num_key_value_heads") or nh, head_dim=cfg.get("head_dim") or h // nh,
                   intermediate=cfg["intermediate_size"],
                   # a key left out of config.json is the class default: untied for these, tied in PretrainedConfig
                   tied=bool(cfg.get("tie_word_embeddings", mt not in KNOWN_TYPES or mt == "gemma")),
                   qkv_bias=mt == "qwen2" or bias, o_bias=bias and mt != "qwen2",
                   mlp_bias=bool(cfg.get("mlp_bias", False)), qk_norm=mt == "qwen3")

    @property
    def q_out(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_out(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[tuple[int, int]]:
        """``(d_in, d_out)`` of each linear layer of one decoder layer: q, k, v, o, gate, up, down."""
        h, i = self.hidden, self.intermediate
        return [(h, self.q_out), (h, self.kv_out), (h, self.kv_out), (self.q_out, h), (h, i), (h, i), (i, h)]

    @property
    def layer_params(self) -> int:
        n = sum(a * b for a, b in self.linears()) + 2 * self.hidden  # the linears and two RMSNorms
        n += (self.q_out + 2 * self.kv_out) if self.qkv_bias else 0
        n += self.hidden if self.o_bias else 0
        n += (2 * self.intermediate + self.hidden) if self.mlp_bias else 0
        n += 2 * self.head_dim if self.qk_norm else 0
        return n

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.embedding_params + self.head_params + self.layers * self.layer_params + self.hidden

    def trainable(self, freeze_layers: int) -> int:
        """Parameters full fine-tuning trains with the embeddings and the lowest ``freeze_layers`` layers frozen."""
        if freeze_layers <= 0:
            return self.params
        return self.params - self.embedding_params - freeze_layers * self.layer_params

    def lora_params(self, r: int, layers: int) -> int:
        return layers * r * sum(a + b for a, b in self.linears())

    @property
    def largest_module(self) -> int:
        return max(self.embedding_params, self.head_params, self.layer_params)

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_out * 2  # K and V, every layer, bf16

    def activation_elements(self, lora: bool, r: int, lora_dropout: float) -> int:
        """bf16 elements one decoder layer keeps per token for its backward pass (see the module docstring)."""
        h, i = self.hidden, self.intermediate
        n = 4 * h + (self.q_out + 2 * self.kv_out) + self.q_out + 4 * i
        if lora:
            n += 7 * r + ((5 * h + self.q_out + i) if lora_dropout > 0 else 0)
        return n

    def describe(self) -> str:
        return (f"{self.model_type}, {self.layers} layers, hidden {self.hidden}, {self.heads} heads / {self.kv_heads} "
                f"KV heads, MLP {self.intermediate}, vocab {self.vocab:,}" + (", tied embeddings" if self.tied else ""))


# ------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class Layout:
    """How training is spread: ``gpus`` training processes, ZeRO ``zero_stage`` (0 = none: one GPU or DDP;
    FSDP's full / gradient sharding count as 3 / 2), CPU offload."""

    gpus: int = 1
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    source: str = "no accelerate config"

    @property
    def name(self) -> str:
        if self.zero_stage:
            off = " + CPU offload" if self.offload_optimizer or self.offload_params else ""
            return f"ZeRO-{self.zero_stage}{off}" + (" (1 GPU: nothing sharded)" if self.gpus == 1 else "")
        return "DDP" if self.gpus > 1 else "single GPU"


def read_accelerate_config(path: str | Path) -> Layout:
    """The layout an ``accelerate launch --config_file`` YAML describes."""
    import yaml

    p = Path(path)
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{p}: cannot read the accelerate config ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: an accelerate config must be a mapping")
    kind = str(cfg.get("distributed_type", "NO")).upper()
    gpus = int(cfg.get("num_processes") or 1)
    stage, off_opt, off_par = 0, False, False
    if kind == "DEEPSPEED":
        ds = dict(cfg.get("deepspeed_config") or {})
        if ds.get("deepspeed_config_file"):
            f = Path(ds["deepspeed_config_file"])
            f = f if f.is_absolute() or f.exists() else p.parent / f
            zero = dict(_read_json(f).get("zero_optimization") or {})
            stage = int(zero.get("stage", 0))
            off_opt = str((zero.get("offload_optimizer") or {}).get("device", "none")) != "none"
            off_par = str((zero.get("offload_param") or {}).get("device", "none")) != "none"
        else:
            stage = int(ds.get("zero_stage", 0))
            off_opt = str(ds.get("offload_optimizer_device", "none")) != "none"
            off_par = str(ds.get("offload_param_device", "none")) != "none"
    elif kind == "FSDP":
        fsdp = dict(cfg.get("fsdp_config") or {})
        strategy = str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        stage = 2 if "GRAD_OP" in strategy or strategy == "2" else 0 if "NO_SHARD" in strategy else 3
        off_opt = off_par = bool(fsdp.get("fsdp_offload_params", False))
    elif kind in ("NO", "MULTI_CPU", "XLA"):
        gpus = 1 if kind == "NO" else gpus
    return Layout(gpus=max(1, gpus), zero_stage=stage, offload_optimizer=off_opt, offload_params=off_par, source=str(p))


def named_accelerate_config(recipe: Path) -> Path | None:
    """The accelerate config the recipe's launch line names (``--config_file X`` in its header comment), looked
    up from the working directory, the recipe's parent directory and the recipe's own directory."""
    m = re.search(r"--config_file[ =](\S+\.ya?ml)", recipe.read_text(encoding="utf-8", errors="replace"))
    if not m:
        return None
    name = Path(m.group(1))
    for base in (Path.cwd(), recipe.resolve().parent.parent, recipe.resolve().parent):
        if (base / name).is_file():
            return base / name
    return None


def resolve_layout(recipe: Path, accelerate_config: Path | None, gpus: int | None) -> Layout:
    if accelerate_config is not None:
        layout = read_accelerate_config(accelerate_config)
    else:
        named = named_accelerate_config(recipe)
        layout = read_accelerate_config(named) if named else Layout()
        if named:
            layout = dataclasses.replace(layout, source=f"{_short(named)}, named in the recipe")
    if gpus is not None:
        if gpus < 1:
            raise ValueError(f"--gpus must be at least 1, got {gpus}")
        layout = dataclasses.replace(layout, gpus=gpus, source=f"{layout.source}; --gpus {gpus}")
    return layout


def _short(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# ------------------------------------------------------------------------------------------ the job
@dataclass(frozen=True)
class Job:
    """What the memory estimate needs from an RL or SFT recipe."""

    kind: str  # rl | sft
    lora: bool
    lora_r: int
    lora_dropout: float
    freeze_layers: int
    batch_size: int
    grad_accum: int
    prompt_tokens: int  # SFT: max_length (the whole example)
    completion_tokens: int  # SFT: 0
    gradient_checkpointing: bool = False
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_util: float = 0.3
    beta: float = 0.0
    num_generations: int = 1

    @property
    def seq(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def prompt_tokens_estimate(task: str | None, k: int, max_item_words: int, style: str) -> int:
    """Tokens of a TagPR prompt at its caps: ``k`` items with the long field cut to ``max_item_words`` words /
    160 characters, the input cut to 1,000 characters, ``style`` instructions; the longest task's when ``task`` is
    None.  Counted at :data:`CHARS_PER_TOKEN` (an upper estimate for English: real prompts are shorter)."""
    from tagpr.prompts import TAGPR_INPUT_CHARS, build_tagpr_messages
    from tagpr.tasks import TASKS, get_task

    filler = "people often write about the things they like and the days they remember " * 40

    def one(t: Any) -> int:
        items = [{f: filler if f == t.truncated_field else filler[:40] for f in t.profile_fields} for _ in range(k)]
        msgs = build_tagpr_messages(t, filler[:TAGPR_INPUT_CHARS + 100], items, max_item_words=max_item_words,
                                    style=style)
        return math.ceil(sum(len(m["content"]) for m in msgs) / CHARS_PER_TOKEN) + CHAT_OVERHEAD

    return max(one(t) for t in ([get_task(task)] if task else TASKS.values()))


# ------------------------------------------------------------------------------------------ the estimate
@dataclass
class Row:
    name: str
    bytes: float
    how: str


@dataclass
class Plan:
    recipe: str
    kind: str
    model: str
    source: str
    shape: ModelShape
    job: Job
    layout: Layout
    gpu_bytes: float
    rows: list[Row]
    total: float
    trained: int
    lora_params: int
    vllm_room: float | None = None  # bytes of KV cache a colocated vLLM has (None: no colocated vLLM)
    notes: list[str] = field(default_factory=list)
    refusal: str | None = None

    @property
    def fits(self) -> bool:
        return self.refusal is None

    @property
    def tokens_per_step(self) -> int:
        return self.job.batch_size * self.job.grad_accum * self.layout.gpus * self.job.seq


def estimate(job: Job, shape: ModelShape, layout: Layout, gpu_bytes: float) -> tuple[list[Row], float, int, int]:
    """``(rows, peak bytes per GPU, trained parameters, LoRA parameters)`` (formulas: module docstring)."""
    n, P = layout.gpus, shape.params
    trained_layers = shape.layers - job.freeze_layers
    shard_w = n if layout.zero_stage >= 3 else 1
    shard_g = n if layout.zero_stage >= 2 else 1
    shard_o = n if layout.zero_stage >= 1 else 1
    zero3 = f" / {n} (ZeRO-3)" if shard_w > 1 else ""
    gathered = 2 * 2 * shape.largest_module if shard_w > 1 else 0
    base = 0.0 if (layout.offload_params and layout.zero_stage >= 3) else 2 * P / shard_w
    gather_note = f" + 2 gathered modules {gathered / GB:.1f}" if gathered else ""
    rows: list[Row] = []
    if job.lora:
        lp = shape.lora_params(job.lora_r, trained_layers)
        trained = lp
        rows.append(Row("weights", base + gathered + 4 * lp / shard_w,
                        f"bf16 {_b(P)}{zero3}{gather_note} + fp32 LoRA r={job.lora_r} {_b(lp)}"))
        rows.append(Row("gradients", 4 * lp / shard_g, f"fp32, LoRA {_b(lp)}" + (f" / {shard_g}" if shard_g > 1 else "")))
        opt, opt_how = 8 * lp / shard_o, f"AdamW 2 fp32 moments x LoRA {_b(lp)}"
    else:
        lp = 0
        trained = shape.trainable(job.freeze_layers)
        rows.append(Row("weights", base + gathered, f"bf16 {_b(P)}{zero3}{gather_note}"))
        rows.append(Row("gradients", 2 * trained / shard_g,
                        f"bf16 x {_b(trained)} trained" + (f" / {shard_g} (ZeRO-{layout.zero_stage})" if shard_g > 1 else "")))
        opt, opt_how = 12 * trained / shard_o, f"AdamW fp32 master + 2 moments x {_b(trained)}"
    if shard_o > 1:
        opt_how += f" / {shard_o}"
    if layout.offload_optimizer:
        opt, opt_how = 0.0, "offloaded to the CPU"
    rows.append(Row("optimizer state", opt, opt_how))
    if job.beta > 0 and not job.lora:
        rows.append(Row("reference model", 2 * P / shard_w, f"beta {job.beta}: bf16 copy{zero3}"))

    tokens = job.batch_size * job.seq
    per_layer = shape.activation_elements(job.lora, job.lora_r, job.lora_dropout) * 2
    edge = tokens * 2 * shape.hidden * 2  # embedding output and the final norm
    if job.gradient_checkpointing:
        act = tokens * (trained_layers * shape.hidden * 2 + per_layer) + edge
        act_how = f"checkpointed: {trained_layers} layer inputs + 1 layer, {tokens:,} tokens"
    else:
        act = tokens * trained_layers * per_layer + edge
        act_how = f"{trained_layers} layers x {per_layer / 1e3:.0f} kB/token x {tokens:,} tokens"
    rows.append(Row("activations", act, act_how))
    if job.kind == "rl":
        positions = job.batch_size * (job.completion_tokens + 1)
        logits, logits_how = positions * shape.vocab * 4, f"{positions:,} completion positions x {shape.vocab:,}, bf16 + grad"
    else:
        positions = tokens
        logits, logits_how = positions * shape.vocab * 10, f"{positions:,} positions x {shape.vocab:,}, bf16, fp32 loss, grad"
    rows.append(Row("logits", logits, logits_how))
    train_pass = act + logits
    rollouts = 0.0
    if job.kind == "rl" and not job.use_vllm:
        n_roll = job.batch_size * job.grad_accum
        rollouts = n_roll * job.seq * shape.kv_bytes_per_token
        rows.append(Row("rollout KV cache", rollouts,
                        f"generate: {n_roll} x {job.seq:,} tokens (peak takes max with training pass)"))
    if job.kind == "rl" and job.use_vllm and job.vllm_mode == "colocate":
        rows.append(Row("vLLM (colocate)", job.vllm_util * gpu_bytes,
                        f"vllm_gpu_memory_utilization {job.vllm_util} x {gpu_bytes / GB:.0f} GB"))
    rows.append(Row("CUDA context, buffers", OVERHEAD, "flat"))
    fixed = sum(r.bytes for r in rows if r.name not in ("activations", "logits", "rollout KV cache"))
    total = fixed + max(train_pass, rollouts)
    return rows, total, trained, lp


def _gpus(n: int) -> str:
    return f"{n} training GPU" + ("s" if n > 1 else "")


def _b(n: float) -> str:
    """A parameter count: 7.62B, 161M, 35.4M."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e8 else f"{n / 1e6:.1f}M"


def _vllm_short(job: Job, shape: ModelShape, gpu_bytes: float) -> bool:
    """A colocated vLLM whose share cannot hold its bf16 weights and one sequence's KV cache."""
    if not (job.kind == "rl" and job.use_vllm and job.vllm_mode == "colocate"):
        return False
    return job.vllm_util * gpu_bytes - 2 * shape.params - VLLM_RESERVE < job.seq * shape.kv_bytes_per_token


def _vllm_util_needed(job: Job, shape: ModelShape, gpu_bytes: float) -> float:
    """The share (in 0.05 steps) that holds vLLM's weights and one generation's rollouts at once."""
    need = 2 * shape.params + VLLM_RESERVE + job.batch_size * job.grad_accum * job.seq * shape.kv_bytes_per_token
    return min(1.0, math.ceil(need / gpu_bytes * 20) / 20)


def _fixes(job: Job, shape: ModelShape, layout: Layout, gpu_bytes: float) -> list[tuple[str, float, bool]]:
    """Single changes that could make the recipe fit: each with the peak it would need and whether it fits."""
    def tried(name: str, j: Job = job, lay: Layout = layout) -> tuple[str, float, bool]:
        peak = estimate(j, shape, lay, gpu_bytes)[1]
        return name, peak, peak <= gpu_bytes and not _vllm_short(j, shape, gpu_bytes)

    out: list[tuple[str, float, bool]] = []
    if not job.lora:
        out.append(tried("lora: true", dataclasses.replace(job, lora=True)))
    sharded = None
    for n in (2, 4, 8, 16, 32, 64):
        if layout.zero_stage >= 3 and n <= layout.gpus:
            continue
        sharded = tried(f"--gpus {n} with ZeRO-3", lay=dataclasses.replace(layout, gpus=n, zero_stage=3))
        if sharded[2]:
            break
    if sharded:
        out.append(sharded)
    if job.kind == "rl" and not job.gradient_checkpointing:
        out.append(tried("gradient_checkpointing: true", dataclasses.replace(job, gradient_checkpointing=True)))
    b, a = job.batch_size, job.grad_accum
    smaller = None
    while b % 2 == 0 and b > 1:
        b, a = b // 2, a * 2
        smaller = tried(f"batch_size {b} with grad_accum {a}", dataclasses.replace(job, batch_size=b, grad_accum=a))
        if smaller[2]:
            break
    if smaller:
        out.append(smaller)
    if job.kind == "rl" and job.use_vllm and job.vllm_mode == "colocate":
        if _vllm_short(job, shape, gpu_bytes):
            u = _vllm_util_needed(job, shape, gpu_bytes)
            out.append(tried(f"vllm_gpu_memory_utilization {u:.2f}", dataclasses.replace(job, vllm_util=u)))
        out.append(tried("vllm_mode: server", dataclasses.replace(job, vllm_mode="server")))
    return out


def refusal(plan: Plan) -> str | None:
    """The one-line reason the recipe does not fit its GPUs, with the changes that would fit (None when it fits)."""
    g, job, shape = plan.gpu_bytes, plan.job, plan.shape
    short = _vllm_short(job, shape, g)
    if plan.total <= g and not short:
        return None
    reasons = []
    if plan.total > g:
        reasons.append(f"needs {plan.total / GB:.0f} GB per GPU on {plan.layout.gpus} x {g / GB:.0f} GB")
    if short:
        reasons.append(f"vllm_gpu_memory_utilization {job.vllm_util} gives the colocated vLLM {job.vllm_util * g / GB:.0f} "
                       f"GB, less than its bf16 weights ({2 * shape.params / GB:.1f} GB) and one sequence's KV cache")
    fixes = _fixes(job, shape, plan.layout, g)
    good = [f"{name} ({need / GB:.0f} GB)" for name, need, ok in fixes if ok]
    if good:
        advice = "use " + ", or ".join(good)
    else:
        advice = ("no single change fits: " + ", ".join(f"{name} ({need / GB:.0f} GB)" for name, need, _ in fixes)
                  + "; combine them or use GPUs with more memory")
    return f"{' and '.join(reasons)}: {advice}"


# ------------------------------------------------------------------------------------------ from a recipe
def recipe_kind(path: str | Path, section: str | None = None) -> str:
    from tagpr.recipes import read_recipe

    data = read_recipe(path)
    if section is not None:
        if section not in ("rl", "sft"):
            raise ValueError(f"--section must be rl or sft, got {section!r}")
        if section not in data:
            raise ValueError(f"{path}: no {section}: section")
        return section
    for kind in ("rl", "sft"):
        if isinstance(data.get(kind), dict):
            return kind
    raise ValueError(f"{path}: neither an rl: nor an sft: section; tagpr plan checks RL and SFT recipes")


def _load(path: Path, kind: str, model: str | None) -> tuple[Any, bool]:
    """The recipe model with placeholders for what a plan does not need (task, data, out, chains), and whether
    the recipe names its task.  In a ``tagpr run`` recipe, RL starts from the SFT model (``sft.model``) and the
    task is ``run.task``."""
    from tagpr.recipes import read_recipe, recipe_section

    raw = recipe_section(path, kind, {})
    whole = read_recipe(path)
    from_run: dict[str, Any] = {}
    if kind == "rl" and isinstance(whole.get("run"), dict):
        sft = whole.get("sft") if isinstance(whole.get("sft"), dict) else {}
        if model is None and "model" not in raw and sft.get("model"):
            model = str(sft["model"])
        if "task" not in raw and whole["run"].get("task"):
            from_run["task"] = whole["run"]["task"]
    if kind == "rl":
        from tagpr.training.rl import RLRecipe, load_rl_recipe

        fill = {"task": "LaMP-7", "data": "-", "out": "-"}
        cls, load = RLRecipe, load_rl_recipe
    else:
        from tagpr.training.sft import SFTRecipe, load_recipe

        fill = {"chains": ["-"], "out": "-"}
        cls, load = SFTRecipe, load_recipe
    overrides = {k: v for k, v in fill.items() if k not in raw and cls.model_fields[k].is_required()}
    overrides.update(from_run, model=model)
    return load(path, overrides), "task" in raw or "task" in from_run


def make_plan(recipe: str | Path, gpus: int | None = None, gpu_memory: float = 80.0, model: str | None = None,
              accelerate_config: str | Path | None = None, prompt_tokens: int | None = None,
              section: str | None = None) -> Plan:
    """The memory plan of ``recipe`` on ``gpus`` GPUs of ``gpu_memory`` GB (never raises for a recipe that does
    not fit: :attr:`Plan.refusal` says why; :func:`check` raises it)."""
    path = Path(recipe)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recipe")
    if gpu_memory <= 0:
        raise ValueError(f"--gpu-memory must be positive, got {gpu_memory}")
    kind = recipe_kind(path, section)
    rec, has_task = _load(path, kind, model)
    cfg, source, local = model_config(rec.model, rec.trust_remote_code)
    shape = ModelShape.from_config(cfg)
    if rec.freeze_layers >= shape.layers:
        raise ValueError(f"freeze_layers={rec.freeze_layers} would freeze all {shape.layers} layers; use at most "
                         f"{shape.layers - 1}")
    layout = resolve_layout(path, Path(accelerate_config) if accelerate_config else None, gpus)
    gpu_bytes = gpu_memory * GB
    notes: list[str] = []
    if kind == "rl":
        style = rec.style()
        if prompt_tokens is None:
            p_tokens = prompt_tokens_estimate(rec.task if has_task else None, rec.k, rec.max_item_words, style)
            p_note = (f"prompt ~{p_tokens:,} tokens: the {style} TagPR prompt of "
                      f"{rec.task if has_task else 'the longest task'} at its caps ({rec.k} items of <= "
                      f"{rec.max_item_words} words, input <= 1,000 characters, {CHARS_PER_TOKEN:.0f} characters a token); "
                      f"--prompt-tokens sets it")
        else:
            p_tokens, p_note = prompt_tokens, f"prompt {prompt_tokens:,} tokens (--prompt-tokens)"
        job = Job(kind="rl", lora=rec.lora, lora_r=rec.lora_r, lora_dropout=rec.lora_dropout,
                  freeze_layers=rec.freeze_layers, batch_size=rec.batch_size, grad_accum=rec.grad_accum,
                  prompt_tokens=p_tokens, completion_tokens=rec.max_completion_length,
                  gradient_checkpointing=rec.gradient_checkpointing, use_vllm=rec.use_vllm, vllm_mode=rec.vllm_mode,
                  vllm_util=rec.vllm_gpu_memory_utilization, beta=rec.beta, num_generations=rec.num_generations)
    else:
        p_note = f"sequence {rec.max_length:,} tokens a row (max_length; SFT here trains without gradient checkpointing)"
        job = Job(kind="sft", lora=rec.lora, lora_r=rec.lora_r, lora_dropout=rec.lora_dropout,
                  freeze_layers=rec.freeze_layers, batch_size=rec.batch_size, grad_accum=rec.grad_accum,
                  prompt_tokens=rec.max_length, completion_tokens=0)
    rows, total, trained, lp = estimate(job, shape, layout, gpu_bytes)
    name = str(rec.model) if rec.model else "embedded SmolLM2-135M-Instruct"
    plan = Plan(recipe=str(recipe), kind=kind, model=name, source=source, shape=shape, job=job, layout=layout,
                gpu_bytes=gpu_bytes, rows=rows, total=total, trained=trained, lora_params=lp, notes=notes)

    P = shape.params
    notes.append(f"model: {name} ({source}): {shape.describe()}")
    if shape.model_type not in KNOWN_TYPES:
        notes.append(f"model_type {shape.model_type!r} is counted as a Llama-style decoder (not checked for it)")
    emb = f"{shape.embedding_params:,} embeddings" + ("" if shape.tied else f" + {shape.head_params:,} LM head")
    notes.append(f"parameters: {P:,} ({emb}, {shape.layers} x {shape.layer_params:,} per layer); trained: {trained:,}"
                 + (f" (LoRA r={job.lora_r} on every linear layer)" if job.lora else "")
                 + (f" (lowest {job.freeze_layers} layers and embeddings frozen)" if job.freeze_layers else ""))
    if local is not None:
        real = safetensors_param_count(local, shape.tied)
        if real is not None:
            notes.append(f"checked against the weights' safetensors headers: {real:,} "
                         f"({(P - real) / real:+.2%} from the count above)")
    notes.append(f"layout: {layout.name} on {_gpus(layout.gpus)} ({layout.source})" if layout.gpus > 1 or layout.zero_stage
                 else f"layout: one training GPU ({layout.source})")
    if kind == "rl":
        completions = job.batch_size * job.grad_accum * layout.gpus
        notes.append(f"tokens per optimizer step: {job.batch_size} x {job.grad_accum} x {_gpus(layout.gpus)} x "
                     f"({job.prompt_tokens:,} + {job.completion_tokens:,}) = {plan.tokens_per_step:,} at most "
                     f"({completions} completions: {completions // job.num_generations} prompts x {job.num_generations})")
    else:
        notes.append(f"tokens per optimizer step: {job.batch_size} x {job.grad_accum} x {_gpus(layout.gpus)} x "
                     f"{job.prompt_tokens:,} = {plan.tokens_per_step:,} at most")
    notes.append(p_note)
    if kind == "rl" and job.use_vllm:
        w = 2 * P
        if job.vllm_mode == "colocate":
            plan.vllm_room = job.vllm_util * gpu_bytes - w - VLLM_RESERVE
            room_tokens = max(0, int(plan.vllm_room // shape.kv_bytes_per_token))
            notes.append(f"vLLM colocated: {job.vllm_util * gpu_bytes / GB:.1f} GB = bf16 weights {w / GB:.1f} + "
                         f"{VLLM_RESERVE / GB:.0f} reserved + KV cache for {room_tokens:,} tokens "
                         f"({room_tokens // max(1, job.seq)} sequences at once; a generation is "
                         f"{job.batch_size * job.grad_accum} per GPU)")
        else:
            fits = "fits" if w + VLLM_RESERVE < 0.9 * gpu_bytes else "does NOT fit: use tensor parallelism"
            notes.append(f"vLLM server: on GPU(s) of its own besides the {_gpus(layout.gpus)}, not in the "
                         f"table; bf16 weights {w / GB:.1f} GB {fits} at trl vllm-serve's 0.9 of one GPU")
    plan.refusal = refusal(plan)
    return plan


def check(plan: Plan) -> Plan:
    """``plan`` when it fits; else ValueError with its one-line refusal."""
    if plan.refusal:
        raise ValueError(plan.refusal)
    return plan


def plan_table(plan: Plan) -> Any:
    """The memory table (rich) of ``plan``: one row per part, the peak, the GPU."""
    from rich.table import Table

    t = Table(title=f"{Path(plan.recipe).name} ({plan.kind}, {_b(plan.shape.params)} parameters) on "
                    f"{plan.layout.gpus} x {plan.gpu_bytes / GB:.0f} GB, {plan.layout.name}")
    t.add_column("per GPU")
    t.add_column("GB", justify="right")
    t.add_column("how")
    for r in plan.rows:
        t.add_row(r.name, f"{r.bytes / GB:.1f}", r.how)
    t.add_section()
    verdict = "fits" if plan.fits else "does NOT fit"
    t.add_row("[bold]peak[/]", f"[bold]{plan.total / GB:.1f}[/]", f"of {plan.gpu_bytes / GB:.0f} GB: {verdict}")
    return t
