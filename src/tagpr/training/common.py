"""What the SFT and RL trainers share: loading the policy, LoRA settings, checkpoints, saving the result, and
which process writes the run's files.

Under ``accelerate launch`` every process runs the same code on the same output directory.  Training state is
the Trainer's (checkpoints, ``log_history``); every other file a run writes (final weights, summaries, reward
logs, deleted checkpoints) is written by the main process only (:func:`is_main_process`), and the processes
meet (:func:`wait_for_everyone`) before anyone reads what the main process wrote."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tagpr.cpu import freed_memory_kept


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def distributed_state() -> Any:
    """accelerate's ``PartialState`` of this process: one process without a launcher, the launched group under
    ``accelerate launch`` / ``torchrun`` (gloo on a CPU, as the trainers' ``use_cpu`` makes it)."""
    from accelerate import PartialState

    return PartialState(cpu=not on_gpu())


def is_main_process() -> bool:
    """Whether this process writes the run's shared files (always True in a single process)."""
    return bool(distributed_state().is_main_process)


def wait_for_everyone() -> None:
    """A barrier of all processes (nothing in a single process)."""
    distributed_state().wait_for_everyone()


def load_policy(model: str | None, trust_remote_code: bool = False) -> tuple[str, Any, Any]:
    """``(resolved id/path, tokenizer, model)``: the embedded SmolLM2 when ``model`` is None; bf16 on a GPU,
    fp32 on the CPU; a pad token when the tokenizer has none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tagpr.embedded import resolve_lm

    model_id = resolve_lm(model)
    tok = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.bfloat16 if on_gpu() else torch.float32,
                                              trust_remote_code=trust_remote_code)
    return model_id, tok, lm


def lora_config(r: int, alpha: int, dropout: float) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def freeze_lower_layers(model: Any, n: int) -> int:
    """Freeze the input embeddings (and a tied output head) and the lowest ``n`` decoder layers of ``model``
    (a transformers causal LM or a PEFT wrapper of one), so the backward pass stops at layer ``n``.  Returns
    the number of parameters left trainable."""
    if n > 0:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        layers = getattr(getattr(base, "model", base), "layers", None)
        if layers is None:
            raise ValueError(f"freeze_layers: {type(base).__name__} has no .model.layers to freeze")
        if n >= len(layers):
            raise ValueError(f"freeze_layers={n} would freeze all {len(layers)} layers; use at most {len(layers) - 1}")
        base.get_input_embeddings().requires_grad_(False)
        for layer in layers[:n]:
            layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def no_checkpointing(config_cls: Any) -> dict[str, Any]:
    """Activation checkpointing off (it slows small CPU runs); the field was renamed in recent versions."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {n: False for n in ("activation_checkpointing", "gradient_checkpointing") if n in names}


def last_checkpoint(out: Path) -> str | None:
    """The complete Trainer checkpoint with the highest step in ``out`` (None when there is none).  The Trainer
    writes ``trainer_state.json`` last: a checkpoint without it was cut short by a kill and is passed over."""
    cks = sorted((p for p in Path(out).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
                  and (p / "trainer_state.json").is_file()),
                 key=lambda p: int(p.name.split("-")[-1]))
    return str(cks[-1]) if cks else None


def prompt_style_callback(style: str) -> Any:
    """A TrainerCallback that records the TagPR prompt form (``tagpr_prompt.json``) in each checkpoint the Trainer
    saves, so ``tagpr eval --model RUN/checkpoint-N`` prompts it as the final model is (without it a checkpoint of
    a compact-chain model was prompted with the full 9-tag instruction).  The main process writes it."""
    from transformers import TrainerCallback

    from tagpr.prompts import write_prompt_style

    class PromptStyle(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if is_main_process() and ckpt.is_dir():
                write_prompt_style(ckpt, style)

    return PromptStyle()


def checkpoint_step(path: str | None) -> int:
    return int(str(path).rsplit("-", 1)[-1]) if path else 0


SHARD_SIZE = "32MB"  # about two decoder layers of a 135M model a shard: frozen layers end up in shards of their own


def save_trained(trainer: Any, tok: Any, out: Path, lora: bool, parent: str | Path | None = None) -> int:
    """Save a trainer's policy with :func:`save_final`, under any number of processes.

    Every process takes part in gathering the weights (``accelerator.get_state_dict``: the full parameters under
    DeepSpeed ZeRO-3 or FSDP, where each process holds a shard; the model's own state elsewhere); the main process
    writes them; all return once the files are complete, so a next stage may load them.  Returns the bytes saved
    by linking (0 on other processes)."""
    acc = trainer.accelerator
    state = acc.get_state_dict(trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model)
    saved = 0
    if is_main_process():
        saved = save_final(acc.unwrap_model(trainer.model), tok, out, lora, parent, state_dict=state)
    acc.wait_for_everyone()
    return saved


def check_saveable(trainer: Any, lora: bool) -> None:
    """Before training: :func:`save_trained` merges LoRA adapters in memory, which needs whole parameters, not the
    shards DeepSpeed ZeRO-3 leaves each process."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if lora and plugin is not None and getattr(plugin, "zero_stage", None) == 3:
        raise ValueError("LoRA adapters cannot be merged under DeepSpeed ZeRO-3 (each process holds a shard of the "
                         "weights): train LoRA with DDP or ZeRO-2 (recipes/accelerate/multi_gpu.yaml, "
                         "deepspeed_zero2.yaml)")


def save_final(model: Any, tok: Any, out: Path, lora: bool, parent: str | Path | None = None,
               state_dict: dict[str, Any] | None = None) -> int:
    """Save the trained policy as safetensors shards in ``out``; LoRA adapters go to ``out/adapter`` and are merged.
    ``state_dict``: the model's weights gathered from every process (:func:`save_trained`); None = the model's own.

    With ``parent`` (the model this one was trained from), a shard whose bytes equal the parent's shard of the
    same name (the embeddings and layers a stage froze) becomes a hard link to it, so a run keeps one copy of
    them.  Any weights file already in ``out`` is removed first: writing into a linked file would change the
    parent too.  Returns the bytes saved by linking."""
    if lora:
        model.save_pretrained(out / "adapter", state_dict=state_dict)
        model, state_dict = model.merge_and_unload(), None  # merged in memory: its own state is the one to save
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.safetensors"), out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=SHARD_SIZE, state_dict=state_dict)
    tok.save_pretrained(out)
    return link_identical_shards(out, Path(parent)) if parent is not None and Path(parent).is_dir() else 0


def link_identical_shards(out: Path, parent: Path) -> int:
    """Replace each ``*.safetensors`` shard of ``out`` whose bytes equal ``parent``'s shard of the same name by a
    hard link to it; returns the bytes saved.  Where links are impossible (another file system) the copy stays."""
    import filecmp
    import os

    saved = 0
    for shard in sorted(out.glob("*.safetensors")):
        twin = parent / shard.name
        try:
            if not twin.is_file() or os.path.samefile(shard, twin) or twin.stat().st_size != shard.stat().st_size:
                continue
            if not filecmp.cmp(shard, twin, shallow=False):
                continue
            tmp = shard.with_name(shard.name + ".link")
            tmp.unlink(missing_ok=True)
            os.link(twin, tmp)
            os.replace(tmp, shard)
            saved += shard.stat().st_size
        except OSError:
            continue
    return saved


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Each tensor's ``*.safetensors`` file in a saved model directory (sharded or not); {} when it has none."""
    from safetensors import safe_open

    files: dict[str, Path] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            files.update(dict.fromkeys(st.keys(), f))
    return files


WEIGHT_CHANGE_CHUNK = 1 << 22  # elements of a tensor compared at once (float64: 32 MB each side)


def weight_change(new: str | Path, old: str | Path | None) -> dict[str, Any] | None:
    """How far training moved a saved model from the one it started from, read back from both directories'
    safetensors a slice at a time (memory: ``WEIGHT_CHANGE_CHUNK`` elements of each side, whatever the model's
    size): ``relative_l2`` = ||new - old|| / ||old|| over the tensors both hold, and how many of them changed.  None
    when ``old`` is not a local directory of safetensors (a hub id, or weights in another format), the two share no
    tensor name, or a shared name has two shapes.

    GRPO's own ``kl`` needs a reference model (``beta > 0``); this answers the same question, "did the stage move
    the policy", at no cost during training, and sets it against what SFT moved (``sft_summary.json``).  Never
    raises: an error is logged and gives None."""
    try:  # a diagnostic: a stage that trained is finished whatever happens here
        return _weight_change(Path(new), Path(old) if old is not None else None)
    except Exception as e:  # noqa: BLE001 - unreadable weights, a file system error, ...
        logging.getLogger(__name__).warning("weight_change(%s, %s) failed: %s", new, old, e)
        return None


def _weight_change(new_dir: Path, old_dir: Path | None) -> dict[str, Any] | None:
    import contextlib
    import math
    import os

    from safetensors import safe_open

    if old_dir is None or not old_dir.is_dir() or not new_dir.is_dir():
        return None
    olds, news = _tensor_files(old_dir), _tensor_files(new_dir)
    names = [n for n in news if n in olds]
    if not names:
        return None
    diff2 = base2 = 0.0
    changed = 0
    with contextlib.ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def open_(f: Path) -> Any:
            if f not in handles:
                handles[f] = stack.enter_context(safe_open(str(f), framework="pt"))
            return handles[f]

        for name in names:
            a_sl, b_sl = open_(olds[name]).get_slice(name), open_(news[name]).get_slice(name)
            shape = a_sl.get_shape()
            if b_sl.get_shape() != shape:
                return None
            linked = os.path.samefile(olds[name], news[name])  # a frozen shard linked to its parent's (save_final)
            if not shape:  # a scalar
                a = open_(olds[name]).get_tensor(name).double()
                base2 += float(a.pow(2))
                d = 0.0 if linked else float((open_(news[name]).get_tensor(name).double() - a).pow(2))
            else:
                per_row = max(1, math.prod(shape[1:]))
                step = max(1, WEIGHT_CHANGE_CHUNK // per_row)
                d = 0.0
                for i in range(0, shape[0], step):
                    a = a_sl[i:i + step].double()
                    base2 += float(a.pow(2).sum())
                    if not linked:
                        d += float((b_sl[i:i + step].double() - a).pow(2).sum())
            diff2 += d
            changed += d > 0
    return {"relative_l2": math.sqrt(diff2) / math.sqrt(base2) if base2 > 0 else None,
            "tensors_changed": changed, "tensors": len(names)}


def score_completions_only_on_cpu() -> bool:
    """Make TRL's fused LM head score only the labelled tokens (completions) on the CPU, as it does on CUDA.

    TRL projects through the LM head (49k-word vocabulary) only the positions whose label is set when Triton
    runs the kernel; elsewhere it scores every position, prompt included, so that tile shapes stay fixed for
    compilers such as Neuron's.  On the CPU in eager mode that only multiplies the work: a GRPO step of 16
    rows x ~560 tokens projected ~9k positions instead of ~2.6k, and the head was ~40% of the step
    (``benchmarks/rl_throughput.py``); SFT with ``completion_only_loss`` projects its prompts for nothing too
    (``benchmarks/sft_throughput.py``).  Returns False (and changes nothing) when TRL has no such switch."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover - TRL is a dependency
        return False
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or getattr(original, "_tagpr_cpu_compact", False):
        return original is not None

    def compact_on_cpu(device: Any) -> bool:
        return bool(original(device)) or getattr(device, "type", None) == "cpu"

    compact_on_cpu._tagpr_cpu_compact = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu
    return True


@contextlib.contextmanager
def cpu_training_pass(cuda: bool, keep_freed_memory: bool = True) -> Iterator[None]:
    """Around ``trainer.train()`` on the CPU: TRL's LM head projects only the labelled positions, and (with
    ``keep_freed_memory``) freed memory stays with the process while it trains, so each step's buffers are not
    page-faulted in anew.  Measured on the quickstart's SFT (``benchmarks/sft_throughput.py``): 28.5 -> 18.2 s a
    step, peak RSS 7.9 -> 6.3 GB, the same loss.  GRPO leaves the memory setting off: its rollouts already keep
    freed memory while they decode, and the one quickstart run with it around the training pass too was no faster
    (256 s of RL against 229 s) at a higher RL peak (7.3 GB against 5.3 GB in the run before, which differed in its
    SFT settings as well).  Nothing changes on a GPU."""
    if cuda:
        yield
        return
    score_completions_only_on_cpu()
    with freed_memory_kept() if keep_freed_memory else contextlib.nullcontext():
        yield
