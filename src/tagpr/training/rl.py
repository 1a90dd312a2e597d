"""``tagpr train rl``: TagPR's multi-stage RL on TRL's ``GRPOTrainer``.

Stages run in sequence, each from the previous stage's weights (the first from ``model``, normally the
SFT checkpoint).  The default is the paper's two phases:

- ``guided``: reward ``1.0·R_task + 0.5·R_tag + 0.5·R_PRMU``;
- ``exploratory``: ``R_task`` only.

Every component is computed and logged in every stage, weighted or not (``rewards.csv``, a row per logged
step, written from the Trainer's ``log_history``; TensorBoard too with ``report_to: [tensorboard]``), and
``rewards.png`` plots them per stage.  Each
stage directory holds Trainer checkpoints; a killed run resumes (by default; ``--overwrite`` starts again) inside
the stage it stopped in, and finished stages (``stage.json``) are not run again.  On a GPU the same recipe generates with
vLLM (``use_vllm``, ``vllm_mode: colocate | server``) and scales out with ``accelerate launch
--config_file recipes/accelerate/...`` (see ``docs/rl.md``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tagpr.data.loading import Example, load_split
from tagpr.prompts import TAGPR_ITEM_WORDS, build_tagpr_messages, resolve_prompt_style, write_prompt_style
from tagpr.embedded import check_model
from tagpr.recipes import StrictModel, load_settings
from tagpr.runstate import RunDir, write_atomic, write_json
from tagpr.retrieval import Retriever, make_retriever, retrieve
from tagpr.tasks import get_task
from tagpr.training.common import (check_saveable, cpu_training_pass, distributed_state, freeze_lower_layers,
                                   is_main_process, last_checkpoint, load_policy, lora_config, no_checkpointing, on_gpu,
                                   prompt_style_callback, save_trained, wait_for_everyone, weight_change)
from tagpr.training.rewards import REWARD_NAMES, FaithfulReward, SpreadLog, reward_functions, reward_name

log = logging.getLogger(__name__)

LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo")
LOGGED = ("reward", "reward_std", "frac_reward_zero_std", "zero_variance/dropped", "kl", "completions/mean_length",
          "completions/clipped_ratio", "loss", "learning_rate", "step_time")


class RLStage(StrictModel):
    """One RL stage: its reward weights, and optional overrides of the recipe's step count and optimiser."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    weights: dict[str, float]
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    temperature: float | None = Field(None, gt=0)
    # off-policy guidance (as in LUFFY, arXiv 2504.14945): in each group of num_generations, this many completions
    # are the teacher's chain for the prompt (the recipe's guide_chains) instead of samples; 0 = on-policy only
    guide: int = Field(0, ge=0)
    # one completion of each group is the policy's greedy decoding (the answer evaluation takes), the others samples:
    # the advantages then compare the samples with it (tagpr.training.rollouts.EngineRollouts)
    greedy: bool = False

    @field_validator("weights")
    @classmethod
    def _known(cls, w: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(w) - set(REWARD_NAMES))
        if bad:
            raise ValueError(f"unknown reward components {bad}; known: {list(REWARD_NAMES)}")
        if any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
            raise ValueError(f"stage weights must be >= 0 with at least one > 0, got {w}")
        return w


def default_stages() -> list[RLStage]:
    return [RLStage(name="guided", weights={"task": 1.0, "tag": 0.5, "prmu": 0.5}),
            RLStage(name="exploratory", weights={"task": 1.0})]


ENGINE_ROLLOUTS = ("ct2", "openvino")  # engines tagpr's rollout function samples with (weights synced every step)


class RLRecipe(StrictModel):
    task: str
    data: str
    out: str
    split: str = "train"
    offset: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)
    model: str | None = None  # the SFT checkpoint; None = the embedded SmolLM2-135M-Instruct
    prmu: str | None = None  # PRMU directory (``tagpr train prmu``); None = no PRMU reward
    # group = the PRMU's raw scores placed between the lowest (0) and highest (1) of each group's completions;
    # sigmoid = sigmoid of the score (saturates near 1 for a trained PRMU: no signal within a group)
    prmu_calibration: Literal["group", "sigmoid"] = "group"
    # classification: a wrong label earns this much times its embedding similarity to the gold (a dense task
    # reward for groups that all miss); 0 = the exact-match reward
    label_similarity: float = Field(0.0, ge=0.0, lt=1.0)
    # screen = before each stage, sample curriculum_samples completions of curriculum_pool prompts from the stage's
    # starting model and train on the prompts it sometimes solves (tagpr/training/curriculum.py); none = all
    curriculum: Literal["none", "screen"] = "none"
    curriculum_samples: int = Field(4, ge=2)
    curriculum_pool: int = Field(64, ge=1)
    # teacher chains for the RL prompts (a ``tagpr chains build`` JSONL of the RL examples); stages with guide > 0
    guide_chains: str | None = None
    retriever: str = "bm25"
    k: int = Field(4, ge=0)
    max_item_words: int = Field(TAGPR_ITEM_WORDS, ge=1)
    # the TagPR prompt form: auto = the one recorded with ``model`` (SFT writes it; full for a base model)
    prompt_style: Literal["auto", "full", "compact"] = "auto"
    stages: list[RLStage] = Field(default_factory=default_stages)
    max_steps: int = Field(20, ge=1)  # per stage, unless the stage says otherwise
    batch_size: int = Field(4, ge=1)  # completions per device step (a multiple of num_generations)
    grad_accum: int = Field(1, ge=1)
    num_generations: int = Field(4, ge=2)
    learning_rate: float = Field(2e-6, gt=0)
    loss_type: str = "dapo"
    beta: float = Field(0.0, ge=0)  # KL coefficient (0: no reference model)
    epsilon: float = Field(0.2, gt=0)
    epsilon_high: float | None = Field(None, gt=0)
    scale_rewards: Literal["group", "batch", "none"] = "group"
    max_completion_length: int = Field(384, ge=1)
    temperature: float = Field(1.0, gt=0)
    mask_truncated_completions: bool = False
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, le=1.0)
    freeze_layers: int = Field(0, ge=0)  # freeze the embeddings and the lowest N decoder layers (shorter backward)
    # who samples the rollouts: openvino = OpenVINO GenAI / ct2 = CTranslate2, from the current weights, synced
    # every step (CPU); trainer = TRL's own generate (or vLLM with use_vllm); auto = openvino (else ct2) on a CPU
    # when installed and vLLM is off
    rollout_engine: Literal["auto", "ct2", "openvino", "trainer"] = "auto"
    rollout_compute_type: str = "float32"
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    gradient_checkpointing: bool = False
    # forward each GRPO group's prompt once in the training pass (a KV cache shared by its completions);
    # auto = on a CPU (on GPUs TRL's padded pass is kept: the shared pass is not checked under ZeRO-3 / FSDP);
    # one process only (several: TRL's pass, see _train_stage)
    shared_prompt_pass: Literal["auto", "on", "off"] = "auto"
    # groups whose completions all earned the same reward (zero advantage): drop = leave them out of the training
    # pass and normalise the loss over the other groups' tokens (DAPO's dynamic sampling, without refill; used
    # with loss_type dapo/cispo and beta 0); keep = TRL's behaviour
    zero_variance_groups: Literal["drop", "keep"] = "drop"
    # negative advantages: keep = GRPO's (completions below their group's mean are pushed down); zero = only the
    # ones above it are reinforced (RAFT-style; with zero_variance_groups drop, the rows at 0 leave the pass too)
    negative_advantages: Literal["keep", "zero"] = "keep"
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(5, ge=1)
    save_total_limit: int = Field(2, ge=1)
    keep_checkpoints: bool = False  # a finished stage's checkpoints (weights + optimizer, ~3x the model) are deleted
    report_to: list[str] = Field(default_factory=list)  # e.g. ["tensorboard"]
    seed: int = 0
    trust_remote_code: bool = False

    @field_validator("loss_type")
    @classmethod
    def _loss(cls, v: str) -> str:
        if v not in LOSS_TYPES:
            raise ValueError(f"loss_type {v!r} is not one of {', '.join(LOSS_TYPES)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> RLRecipe:
        get_task(self.task)
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(f"batch_size x grad_accum ({self.batch_size} x {self.grad_accum}) must be a multiple of "
                             f"num_generations ({self.num_generations})")
        if self.rollout_engine in ENGINE_ROLLOUTS and self.use_vllm:
            raise ValueError(f"rollout_engine: {self.rollout_engine} and use_vllm: true both choose the rollout "
                             "engine; keep one")
        names = [s.name for s in self.stages]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"stages need unique names, got {names}")
        for s in self.stages:
            if s.guide + s.greedy >= self.num_generations:
                also = " and the greedy completion" if s.greedy else ""
                raise ValueError(f"stage {s.name!r}: guide {s.guide}{also} must leave at least one sampled completion "
                                 f"in a group of num_generations {self.num_generations}")
            if s.guide and self.guide_chains is None:
                raise ValueError(f"stage {s.name!r} has guide {s.guide} but the recipe gives no guide_chains "
                                 "(a chains JSONL of the RL examples, from tagpr chains build)")
            if s.weights.get("faithful", 0.0) > 0:
                try:
                    FaithfulReward.task_of(self.task)
                except ValueError as e:
                    raise ValueError(f"stage {s.name!r} weights it: {e}") from None
        return self

    def engine(self) -> str:
        """The rollout engine ``rollout_engine`` names on this machine (``openvino``, ``ct2`` or ``trainer``):
        ``auto`` is OpenVINO GenAI on a CPU when it is installed, vLLM is off and ``rollout_compute_type`` is one
        of OpenVINO's (else CTranslate2, else TRL's own generate)."""
        if self.rollout_engine != "auto":
            return self.rollout_engine
        from tagpr.generation import ct2, openvino

        if self.use_vllm or on_gpu():
            return "trainer"
        if openvino.available() and self.rollout_compute_type in openvino.COMPUTE_TYPES:
            return "openvino"
        return "ct2" if ct2.available() else "trainer"

    def check_prmu(self) -> None:
        """A stage that weights the PRMU reward needs a PRMU model (checked when the run starts, so an ablation
        such as ``--no-prmu`` can first take the weight away)."""
        if self.prmu is None and any(s.weights.get("prmu", 0) > 0 for s in self.stages):
            raise ValueError("a stage weights the PRMU reward but no PRMU model was given (prmu: DIR / --prmu, "
                             "or --no-prmu)")

    def identity(self) -> dict[str, Any]:
        """What must match to resume a run.  Step counts, logging and saving may change, and so may the engine
        that samples the rollouts (every engine samples from the policy's current weights, so a run started with
        CTranslate2 rollouts goes on with OpenVINO's, or the trainer's, after an upgrade)."""
        d = self.model_dump(exclude={"max_steps", "logging_steps", "save_steps", "save_total_limit",
                                      "keep_checkpoints", "report_to", "shared_prompt_pass", "rollout_engine"})
        d["stages"] = [{k: v for k, v in s.items() if k != "max_steps"} for s in d["stages"]]
        d["prompt_style"] = self.style()
        return d

    def style(self) -> str:
        """The TagPR prompt form the policy is prompted with (``prompt_style``, ``auto`` resolved)."""
        return resolve_prompt_style(self.prompt_style, self.model)


def load_rl_recipe(path: str | Path | None, overrides: dict[str, Any]) -> RLRecipe:
    """The ``rl:`` section of a YAML recipe (or the bare mapping) with CLI overrides."""
    return load_settings(RLRecipe, path, "rl", overrides)


def ablate(recipe: RLRecipe, no_tag_reward: bool = False, no_prmu: bool = False, no_exploratory: bool = False,
           only: Sequence[str] | None = None) -> RLRecipe:
    """The recipe with an ablation applied: tag weight 0, PRMU off, only the first (guided) stage, or only the
    named stages.  A stage left with no positive weight is dropped."""
    stages = list(recipe.stages)
    if only is not None:
        unknown = sorted(set(only) - {s.name for s in stages})
        if unknown:
            raise ValueError(f"no stage named {unknown} in the recipe (stages: {[s.name for s in stages]})")
        stages = [s for s in stages if s.name in only]
    if no_exploratory:
        stages = stages[:1]
    out = []
    for s in stages:
        w = dict(s.weights)
        if no_tag_reward:
            w["tag"] = 0.0
        if no_prmu:
            w.pop("prmu", None)
        if any(v > 0 for v in w.values()):
            out.append(s.model_copy(update={"weights": w}))
    if not out:
        raise ValueError("the ablation leaves no stage with a positive reward weight")
    return recipe.model_copy(update={"stages": out, "prmu": None if no_prmu else recipe.prmu})


# ------------------------------------------------------------------------------------------ data
def rl_rows(task: str, examples: Sequence[Example], retriever: Retriever, k: int,
            max_item_words: int = TAGPR_ITEM_WORDS, style: str = "full") -> list[dict[str, Any]]:
    """GRPO rows: TagPR's chat prompt (the one SFT and evaluation use) plus the columns the rewards read."""
    t = get_task(task)
    rows = []
    for e in examples:
        if e.gold is None:
            raise ValueError(f"example id={e.id!r}: no gold output (RL needs the outputs file of the split)")
        items = retrieve(e, t, retriever, k) if k else []
        rows.append({"prompt": build_tagpr_messages(t, e.input, items, max_item_words=max_item_words, style=style),
                     "gold": str(e.gold), "num_items": len(items), "input": e.input,
                     "shown": json.dumps([t.item_output(it) for it in items], ensure_ascii=False, default=str),
                     "profile": json.dumps(e.profile, ensure_ascii=False, default=str), "id": e.id,
                     "user_id": "" if e.user_id is None else str(e.user_id)})
    return rows


def _guides(recipe: RLRecipe, tok: Any) -> dict[str, list[list[int]]]:
    """The teacher completions of ``recipe.guide_chains``, keyed by the RL prompt each chain answers."""
    from tagpr.training.rollouts import guide_completions
    from tagpr.training.sft import read_chains

    records, _ = read_chains([recipe.guide_chains])
    style = recipe.style()
    guides = guide_completions(
        records, lambda r: build_tagpr_messages(recipe.task, r["input"], r["items"],
                                                max_item_words=recipe.max_item_words, style=style),
        tok, recipe.max_completion_length)
    if not guides:
        raise ValueError(f"{recipe.guide_chains}: no chain fits max_completion_length {recipe.max_completion_length}")
    return guides


# ------------------------------------------------------------------------------------------ logging
def reward_rows(log_history: Sequence[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    """The ``rewards.csv`` rows of a stage: one per logged step of the Trainer's ``log_history`` (which a resumed
    Trainer restores from its checkpoint, so a step a kill cut short is logged once), with the reward components,
    the metrics in ``LOGGED``, each component's within-group spread (``spread/<name>``) and, in a stage with
    ``greedy: true``, its mean over the greedy completions (``greedy/<name>``)."""
    rows = []
    for h in log_history:
        if "reward" not in h:
            continue
        row: dict[str, Any] = {"stage": stage, "step": h["step"]}
        row.update({k: h[k] for k in sorted(h) if (k.startswith("rewards/") or k in LOGGED) and h[k] is not None})
        row.update({k: v for k, v in h.items() if k.startswith(("spread/", "greedy/")) and v is not None})
        rows.append(row)
    return rows


def _reward_log_callback(path: Path, stage: str) -> Any:
    """A TrainerCallback rewriting ``path`` from the ``log_history`` at each log (the main process only)."""
    from transformers import TrainerCallback

    class RewardLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            if "reward" in (logs or {}) and is_main_process():  # one writer of the shared file
                _write_rows(path, reward_rows(state.log_history, stage))  # atomic: a kill never leaves a half row

    return RewardLog()


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=cols or ["stage", "step"])
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, text.getvalue())


def read_reward_log(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    with p.open(newline="") as f:
        return [{k: (v if k == "stage" else float(v)) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------ training
def stage_dirs(recipe: RLRecipe) -> list[Path]:
    return [Path(recipe.out) / f"{i + 1}-{s.name}" for i, s in enumerate(recipe.stages)]


def final_model(recipe: RLRecipe) -> str:
    """The last stage's model directory."""
    return str(stage_dirs(recipe)[-1])


def _saved_recipe(raw: dict[str, Any]) -> RLRecipe:
    """The recipe an earlier run saved (``rl_recipe.json``), read by this version."""
    raw = {**raw}
    raw.setdefault("prmu_calibration", "sigmoid")  # runs saved before the setting existed had sigmoid rewards
    raw = {k: v for k, v in raw.items() if k in RLRecipe.model_fields}  # a setting since removed is not a mismatch
    return RLRecipe.model_validate(raw)


def run_dir(recipe: RLRecipe) -> RunDir:
    """An RL run's directory: ``rl_recipe.json``, a sub-directory per stage, ``rewards.csv``, ``rl_summary.json``."""
    return RunDir(recipe.out, "rl_recipe.json", ("*",), "an RL run",
                  owns=("rl_summary.json", "rewards.csv", "rewards.png", "[0-9]*-*"))


def train_rl(recipe: RLRecipe | str | Path | None = None, *, overwrite: bool = False, callbacks: Sequence[Any] = (),
             progress: bool = True, examples: Sequence[Example] | None = None,
             prmu_reward: Callable[..., list[float]] | None = None, **settings: Any) -> dict[str, Any]:
    """Multi-stage RL: run every stage not finished yet (a killed run resumes inside its stage; ``overwrite``
    starts again); returns the summary written to ``rl_summary.json``.

    ``recipe`` is an :class:`RLRecipe`, or a YAML recipe whose ``rl:`` section is read; ``settings`` (RLRecipe
    fields: ``task``, ``data``, ``out``, ``model``, ``max_steps``, ...) override it.  ``examples`` replace the
    data's split; ``prmu_reward`` replaces the PRMU model's reward."""
    recipe = load_settings(RLRecipe, recipe, "rl", settings)
    if prmu_reward is None:
        recipe.check_prmu()
    check_model(recipe.model)
    t = get_task(recipe.task)
    if examples is None:  # the inputs are read and checked before --overwrite deletes anything
        examples = load_split(recipe.data, t, recipe.split, require_golds=True)
        examples = examples[recipe.offset:]
        examples = examples[: recipe.limit] if recipe.limit else examples
    if not examples:
        raise ValueError(f"no examples for RL in {recipe.data} (split {recipe.split}, offset {recipe.offset})")
    if recipe.prmu is not None and prmu_reward is None and not Path(recipe.prmu).exists():
        raise FileNotFoundError(f"{recipe.prmu}: no such PRMU model directory")
    if any(s.guide or s.greedy for s in recipe.stages) and recipe.engine() not in ENGINE_ROLLOUTS:
        raise ValueError("a stage with guide > 0 or greedy: true needs rollout_engine ct2 or openvino (tagpr's rollout "
                         "function places the teacher's chains or the greedy completion in the groups)")
    if any(s.guide for s in recipe.stages):
        if not Path(str(recipe.guide_chains)).is_file():
            raise FileNotFoundError(f"{recipe.guide_chains}: no such chains file (guide_chains)")
    run_dir(recipe).start(recipe, RLRecipe.identity, overwrite, load=_saved_recipe, main=is_main_process(),
                          barrier=wait_for_everyone, inputs=(recipe.model, recipe.prmu, recipe.data))
    out = Path(recipe.out)
    rows = rl_rows(t.name, examples, make_retriever(recipe.retriever), recipe.k, recipe.max_item_words, recipe.style())
    if recipe.prmu is not None and prmu_reward is None and not all(
            (d / "stage.json").exists() for d in stage_dirs(recipe)):
        from tagpr.prmu import PRMUReward

        prmu_reward = PRMUReward(recipe.prmu, t.name, calibration=recipe.prmu_calibration)
    model_in = recipe.model
    stages_out = []
    for stage, sdir in zip(recipe.stages, stage_dirs(recipe)):
        done = sdir / "stage.json"
        if done.exists():
            stages_out.append(json.loads(done.read_text()))
            model_in = str(sdir)
            continue
        train_rows, screened = rows, None
        if recipe.curriculum == "screen":
            from tagpr.training.curriculum import stage_rows

            train_rows, screened = stage_rows(
                rows, sdir, t.name, model_in, samples=recipe.curriculum_samples, pool=recipe.curriculum_pool,
                min_rows=recipe.batch_size * recipe.grad_accum // recipe.num_generations,
                temperature=stage.temperature or recipe.temperature, max_new_tokens=recipe.max_completion_length,
                seed=recipe.seed)
        summary = _train_stage(recipe, stage, sdir, model_in, train_rows, callbacks, progress, prmu_reward)
        if screened is not None:
            summary["curriculum"] = {k: v for k, v in screened.items() if k != "ids"}
        if is_main_process():
            write_json(done, summary)
            if not recipe.keep_checkpoints:  # resuming a finished stage needs none of them (stage.json marks it done)
                for ckpt in sdir.glob("checkpoint-*"):
                    shutil.rmtree(ckpt, ignore_errors=True)
        wait_for_everyone()  # the stage is finished on disk for every process
        stages_out.append(summary)
        model_in = str(sdir)
    log_rows: list[dict[str, Any]] = []
    for sdir in stage_dirs(recipe):
        log_rows += read_reward_log(sdir / "rewards.csv")
    plot = out / "rewards.png" if log_rows else None
    result = {"task": t.name, "examples": len(rows), "final_model": final_model(recipe), "stages": stages_out,
              "rewards_csv": str(out / "rewards.csv"), "plot": str(plot) if plot else None}
    if is_main_process():
        from tagpr.reports import plot_rewards

        _write_rows(out / "rewards.csv", log_rows)
        plot_rewards(log_rows, [s.name for s in recipe.stages], out / "rewards.png")
        write_json(out / "rl_summary.json", result)
    wait_for_everyone()
    return result


def _train_stage(recipe: RLRecipe, stage: RLStage, sdir: Path, model_in: str | None, rows: list[dict[str, Any]],
                 callbacks: Sequence[Any], progress: bool,
                 prmu_reward: Callable[..., list[float]] | None) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    sdir.mkdir(parents=True, exist_ok=True)
    cuda = on_gpu()
    model_id, tok, model = load_policy(model_in, recipe.trust_remote_code)
    funcs, weights = reward_functions(recipe.task, stage.weights, prmu_reward=prmu_reward,
                                      label_similarity=recipe.label_similarity)
    spread = SpreadLog(recipe.num_generations, greedy_first=stage.greedy)
    funcs = [spread.wrap(f) for f in funcs]
    steps = stage.max_steps or recipe.max_steps
    vllm: dict[str, Any] = {}
    if recipe.use_vllm:
        vllm = {"use_vllm": True, "vllm_mode": recipe.vllm_mode,
                "vllm_gpu_memory_utilization": recipe.vllm_gpu_memory_utilization}
        if recipe.vllm_server_base_url:
            vllm["vllm_server_base_url"] = recipe.vllm_server_base_url
    args = GRPOConfig(
        output_dir=str(sdir), max_steps=steps, per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum, num_generations=recipe.num_generations,
        learning_rate=stage.learning_rate or recipe.learning_rate, loss_type=recipe.loss_type, beta=recipe.beta,
        epsilon=recipe.epsilon, epsilon_high=recipe.epsilon_high,
        scale_rewards=recipe.scale_rewards,
        max_completion_length=recipe.max_completion_length, temperature=stage.temperature or recipe.temperature,
        mask_truncated_completions=recipe.mask_truncated_completions, reward_weights=weights,
        logging_steps=recipe.logging_steps, save_steps=recipe.save_steps, save_total_limit=recipe.save_total_limit,
        report_to=recipe.report_to or "none", seed=recipe.seed, use_cpu=not cuda, bf16=cuda,
        disable_tqdm=not progress, **vllm,
        **(no_checkpointing(GRPOConfig) if not recipe.gradient_checkpointing else {"gradient_checkpointing": True}),
    )
    ckpt = last_checkpoint(sdir)
    log_cb = _reward_log_callback(sdir / "rewards.csv", stage.name)
    peft_config = lora_config(recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout) if recipe.lora else None
    rollouts = None
    if recipe.engine() in ENGINE_ROLLOUTS:
        from tagpr.generation import make_backend
        from tagpr.training.rollouts import EngineRollouts

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is documented as experimental
        rollouts = EngineRollouts(make_backend(recipe.engine(), model_id, compute_type=recipe.rollout_compute_type,
                                               tokenizer_obj=tok, defer=True,
                                               trust_remote_code=recipe.trust_remote_code),
                                  guides=_guides(recipe, tok) if stage.guide else None, guide=stage.guide,
                                  greedy=stage.greedy)
    from tagpr.training.grpo import tagpr_grpo_trainer

    # one process only: under DDP every forward call is a collective (it broadcasts the buffers), and the shared
    # pass makes one or two calls per prompt group, which differ between processes
    shared = (recipe.shared_prompt_pass == "on" or (recipe.shared_prompt_pass == "auto" and not cuda)) and \
        distributed_state().num_processes == 1
    trainer_cls = tagpr_grpo_trainer(GRPOTrainer, shared_prompt=shared,
                                     drop_zero_variance=recipe.zero_variance_groups == "drop", extra_logs=spread.pop,
                                     positive_only=recipe.negative_advantages == "zero")
    trainer = trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, peft_config=peft_config,
                          callbacks=[log_cb, prompt_style_callback(recipe.style()), *callbacks],
                          rollout_func=rollouts)
    if not progress:
        from tagpr.console import without_log_printer

        without_log_printer(trainer)
    freeze_lower_layers(trainer.model, recipe.freeze_layers)  # after TRL's PEFT wrapping; the optimizer is made in train()
    check_saveable(trainer, recipe.lora)
    try:
        with cpu_training_pass(cuda, keep_freed_memory=False):
            result = trainer.train(resume_from_checkpoint=ckpt)
    finally:
        if rollouts is not None:  # the engine's pipeline, its copy of the weights and its temporary files
            rollouts.backend.close()
    # every process gathers, the main one writes (frozen layers: linked to the parent's shards, not copied)
    save_trained(trainer, tok, sdir, recipe.lora, parent=model_in)
    stage_log = reward_rows(trainer.state.log_history, stage.name)  # the whole stage, a resumed one included
    moved = None
    if is_main_process():
        write_prompt_style(sdir, recipe.style())
        _write_rows(sdir / "rewards.csv", stage_log)
        moved = weight_change(sdir, model_id)
    logged = [{k: (v if k == "stage" else float(v)) for k, v in r.items()} for r in stage_log]
    names = [reward_name(f) for f in funcs]

    def mean_of(key: str, part: Sequence[dict[str, Any]]) -> float | None:
        vals = [r[key] for r in part if key in r]
        return sum(vals) / len(vals) if vals else None

    half = max(1, len(logged) // 2)
    engine = {"rollout_engine": recipe.engine(), **(rollouts.stats() if rollouts is not None else {})}
    return {"stage": stage.name, "model_in": model_id, "weights": dict(zip(names, weights)), **engine,
            "global_step": trainer.state.global_step, "resumed_from": ckpt, "train_loss": result.training_loss,
            "reward_first_half": {n: mean_of(f"rewards/{n}/mean", logged[:half]) for n in names},
            "reward_second_half": {n: mean_of(f"rewards/{n}/mean", logged[half:]) for n in names},
            "logged_steps": len(logged), "weight_change": moved}
