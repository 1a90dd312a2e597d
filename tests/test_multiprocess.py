"""``tagpr train sft`` and ``tagpr train rl`` under ``accelerate launch`` with 2 CPU processes (gloo), on a tiny
random model: one writer (the main process) of every file a run writes, the same final weights in both processes
and on disk, rewards logged once per step, and a run whose second process was killed resumes from its checkpoint.

Each run goes through ``tests/mp_launch.py``, which runs the CLI's own ``app`` in every process and reports what
the process wrote (Python's audit hooks) and the digests of its trained and reloaded weights."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tagpr.data.loading import write_examples
from tagpr.data.synthetic import generate_splits

pytestmark = pytest.mark.multiprocess

LAUNCHER = Path(__file__).with_name("mp_launch.py")
# the Trainer's own per-process checkpoint file: the one thing a second process writes into a run directory
PER_RANK = "rng_state_1.pth"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], watch: Path, probe: Path, kill: str | None = None) -> subprocess.CompletedProcess:
    """``accelerate launch`` of 2 CPU processes running ``tagpr ARGS`` (torchrun's launcher: ``--multi_gpu`` is
    accelerate's name for it; with no GPU the trainers' ``use_cpu`` makes the group gloo)."""
    env = dict(os.environ, MP_WATCH=str(watch), MP_PROBE=str(probe), OMP_NUM_THREADS="1",
               TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false", COLUMNS="400")  # no wrapped lines
    env.pop("MP_KILL", None)
    if kill:
        env["MP_KILL"] = kill
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(LAUNCHER), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def reports(probe: Path) -> list[dict]:
    return [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]


def check_one_writer(reps: list[dict]) -> None:
    """Rank 1 wrote, renamed or removed nothing in the run directory (it may make directories, which is race-free
    with ``exist_ok``, and the Trainer's own per-process RNG state in checkpoints); rank 0 wrote the rest."""
    mine = [p for ev, p in reps[1]["writes"] if ev != "os.mkdir" and Path(p).name != PER_RANK]
    assert mine == [], f"the second process wrote {sorted(set(mine))}"
    assert reps[0]["writes"], "no writes seen from the main process"


def check_weights(reps: list[dict], runs: list[tuple[Path, Path]]) -> None:
    """For each (start model, output directory): both processes trained to the same weights, other than the start
    model's, and both load exactly those from the output directory once the run returns."""
    from transformers import AutoModelForCausalLM

    from mp_launch import _digest

    for start, d in runs:
        key = os.path.realpath(d)
        digests = {reps[0]["trained"][key], reps[1]["trained"][key], reps[0]["loaded"][key], reps[1]["loaded"][key]}
        assert len(digests) == 1, f"{d}: trained/loaded weights differ between processes or from the disk"
        assert digests != {_digest(AutoModelForCausalLM.from_pretrained(start))}, f"{d}: the weights did not change"


def files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def check_one_copy(d: Path, also: set[str]) -> None:
    """``d`` holds one saved model (one set of shards, as its index names them, its config and tokenizer), the files
    ``also``, and no second copy or leftover of an interrupted write (``.tmp``, ``.link``, ``.part``)."""
    have = files(d)
    shards = {f for f in have if f.endswith(".safetensors") and "/" not in f}
    index = d / "model.safetensors.index.json"
    named = set(json.loads(index.read_text())["weight_map"].values()) if index.exists() else {"model.safetensors"}
    assert shards == named, f"{d}: shards {sorted(shards)}, the index names {sorted(named)}"
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "tagpr_prompt.json"} | also <= have
    assert not [f for f in have if f.endswith((".tmp", ".link", ".part"))]


def rewards(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Synthetic LaMP-3 (ratings): the SFT chains' examples and the RL prompts."""
    d = tmp_path_factory.mktemp("data")
    write_examples(generate_splits("LaMP-3", 16, 2, seed=4)["train"], d / "LaMP_3", "LaMP-3", "train")
    return d


@pytest.fixture(scope="module")
def chains(data) -> Path:
    from tagpr.pipeline.chains import ChainBuilder, ChainsConfig

    ChainBuilder(ChainsConfig(task="LaMP-3", data=str(data), samples=1, labeller="none", k=2),
                 data / "c.jsonl").run(progress=False)
    return data / "c.jsonl"


def test_sft_on_two_processes_writes_each_file_once_with_the_trained_weights(tiny_model, chains, tmp_path):
    out, probe = tmp_path / "sft", tmp_path / "probe"
    (tmp_path / "sft.yaml").write_text("sft:\n  logging_steps: 1\n")
    res = launch(["train", "sft", "--config", str(tmp_path / "sft.yaml"), "--chains", str(chains), "--out", str(out),
                  "--model", str(tiny_model), "--full", "--max-steps", "3", "--batch-size", "2", "--save-steps", "2",
                  "--learning-rate", "1e-3", "--max-length", "512"], out, probe)
    assert res.returncode == 0, res.stderr[-3000:]
    reps = reports(probe)
    check_one_writer(reps)
    check_weights(reps, [(tiny_model, out)])
    summary = json.loads((out / "sft_summary.json").read_text())
    assert summary["global_step"] == 3 and [c["step"] for c in summary["loss_curve"]] == [1, 2, 3]
    assert summary["examples"] == 16 and all(c["loss"] > 0 for c in summary["loss_curve"])
    check_one_copy(out, {"sft_summary.json", "README.md", "loss.png"})
    assert res.stderr.count("(model card") == 1  # one report, from the main process
    assert not list(out.glob("checkpoint-*")) and not list(out.rglob("*.tmp"))


def test_rl_on_two_processes_logs_each_step_once_and_chains_the_stages(tiny_model, data, tmp_path):
    out, probe = tmp_path / "rl", tmp_path / "probe"
    res = launch(["train", "rl", "--task", "LaMP-3", "--data", str(data), "--model", str(tiny_model),
                  "--out", str(out), "--no-prmu", "--max-steps", "2", "--batch-size", "2", "--num-generations", "2",
                  "--max-completion-length", "8", "--learning-rate", "1e-3", "--full"], out, probe)
    assert res.returncode == 0, res.stderr[-3000:]
    reps = reports(probe)
    check_one_writer(reps)
    guided, exploratory = out / "1-guided", out / "2-exploratory"
    check_weights(reps, [(tiny_model, guided), (guided, exploratory)])
    assert res.stderr.count("per-step rewards") == 1  # one report, from the main process
    summary = json.loads((out / "rl_summary.json").read_text())
    g, e = summary["stages"]
    assert (g["global_step"], e["global_step"]) == (2, 2) and e["model_in"] == str(guided)
    assert g["logged_steps"] == e["logged_steps"] == 2
    rows = rewards(out / "rewards.csv")
    assert [(r["stage"], float(r["step"])) for r in rows] == [("guided", 1.0), ("guided", 2.0),
                                                              ("exploratory", 1.0), ("exploratory", 2.0)]
    for r in rows:  # ratings from the digits: task rewards spread within groups, no tags (tag reward 0)
        assert 0.0 <= float(r["rewards/task/mean"]) <= 1.0 and float(r["rewards/tag/mean"]) == 0.0
        assert 0.0 <= float(r["spread/task"]) <= 0.5 and float(r["spread/tag"]) == 0.0
        assert 0.0 <= float(r["zero_variance/dropped"]) <= 1.0
    assert any(float(r["spread/task"]) > 0 for r in rows)  # advantages to learn from (check_weights: it learnt)
    assert [float(r["step"]) for r in rewards(guided / "rewards.csv")] == [1.0, 2.0]
    for d in (guided, exploratory):
        check_one_copy(d, {"stage.json", "rewards.csv"})
    assert {"rl_recipe.json", "rl_summary.json", "rewards.csv", "rewards.png"} <= files(out)
    assert (out / "rewards.png").stat().st_size > 1000 and not list(out.rglob("checkpoint-*"))


def test_rl_killed_in_one_process_resumes_from_its_checkpoint(tiny_model, data, tmp_path):
    out, probe = tmp_path / "rl", tmp_path / "probe"
    (tmp_path / "rl.yaml").write_text(
        f"rl:\n  task: LaMP-3\n  data: {data}\n  model: {tiny_model}\n  out: {out}\n  batch_size: 2\n"
        "  num_generations: 2\n  max_completion_length: 8\n  learning_rate: 0.001\n  save_steps: 1\n"
        "  stages:\n    - {name: guided, weights: {task: 1.0, tag: 0.5}, max_steps: 3}\n"
        "    - {name: exploratory, weights: {task: 1.0}, max_steps: 1}\n")
    args = ["train", "rl", "--config", str(tmp_path / "rl.yaml")]
    killed = launch(args, out, tmp_path / "probe-killed", kill="1:2")  # rank 1 dies after step 2 of guided
    assert killed.returncode != 0
    guided = out / "1-guided"
    assert (guided / "checkpoint-1" / "trainer_state.json").is_file() and not (guided / "stage.json").exists()
    assert not list(guided.glob("*.safetensors")) and not (out / "rl_summary.json").exists()
    res = launch(args, out, probe)  # the same command resumes
    assert res.returncode == 0, res.stderr[-3000:]
    reps = reports(probe)
    check_one_writer(reps)
    check_weights(reps, [(tiny_model, guided), (guided, out / "2-exploratory")])
    g, e = json.loads((out / "rl_summary.json").read_text())["stages"]
    assert Path(g["resumed_from"]).name in ("checkpoint-1", "checkpoint-2") and g["global_step"] == 3
    assert e["resumed_from"] is None and e["global_step"] == 1
    rows = rewards(out / "rewards.csv")  # each step once: the steps after the checkpoint were logged again, once
    assert [(r["stage"], float(r["step"])) for r in rows] == [("guided", 1.0), ("guided", 2.0), ("guided", 3.0),
                                                              ("exploratory", 1.0)]
    assert not list(out.rglob("checkpoint-*"))
