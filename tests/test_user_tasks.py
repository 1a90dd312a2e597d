"""A task from a YAML record outside the package (``examples/tasks/review-writing.yaml``: LongLaMP-style reviews,
several lines long) through evaluation, chain building (analytic teacher), SFT and RL, the way a user runs them:
``tagpr --include-path examples/tasks ...``."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import restored_task_registry
from fakes import FixedBackend
from tagpr.cli import app
from tagpr.data.loading import load_split
from tagpr.evaluation import EvalConfig, EvalRun
from tagpr.tags import check_chain
from tagpr.tasks import get_task, include_path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tasks"
DATA = EXAMPLE / "data"
runner = CliRunner()


@pytest.fixture(scope="module")
def task():
    with restored_task_registry():
        yield include_path(EXAMPLE)[0]


def tagpr(*args: str) -> str:
    r = runner.invoke(app, ["--include-path", str(EXAMPLE), *args])
    assert r.exit_code == 0, r.output[-3000:]
    return r.stdout


def test_the_record_and_its_data(task):
    assert task.name == "review-writing" and get_task("reviews") is task and task.official_id == "review-writing"
    assert task.answers.multiline and task.answers.max_new_tokens == 160 and task.answers.metric_names == ("rouge-1", "rouge-L")
    dev = load_split(DATA, "reviews", "dev", require_golds=True)
    assert [e.gold for e in dev] == ["Great kettle.\nBoils fast.", "Quick pump.\nSolid valve.", "Jams often.\nFeels cheap."]
    assert task.retrieval_query(dev[0].input) == "kettle"
    assert task.question(dev[0].profile[0]) == "Write a 5-star review of the following product: frying pan"
    assert task.parse('Here is the review:\n"Great kettle.\n\n  Boils fast."\n') == "Great kettle.\nBoils fast."
    assert get_task("LaMP-4").parse("Great kettle.\nBoils fast.") == "Great kettle."  # one-line tasks keep one line
    assert json.loads(tagpr("data", "validate", "--task", "reviews", "--data", str(DATA), "--split", "train")) == {
        "examples": 6, "with_golds": 6, "profile_items_mean": 4.0, "profile_items_max": 4, "dated_items": False}


def test_evaluation_scores_multi_line_answers(task, tmp_path):
    dev = load_split(DATA, "reviews", "dev")
    backend = FixedBackend({dev[0].input: "Here is the review:\nGreat kettle.\nBoils fast.",
                            dev[1].input: "Quick pump.",  # half the gold's words: ROUGE-1 P 1, R 1/2, F 2/3
                            dev[2].input: ""})
    run = EvalRun(EvalConfig(task="reviews", data=str(DATA), split="dev", method="rag", k=2), tmp_path / "run",
                  backend=backend)
    assert run.sampling().max_new_tokens == 160  # the record's answer.max_new_tokens
    res = run.run(progress=False)
    assert res["n"] == 3 and res["rouge-1"] == pytest.approx(5 / 9) and res["rouge-L"] == pytest.approx(5 / 9)
    assert res["valid_answer_rate"] == pytest.approx(2 / 3)
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "examples.jsonl").read_text().splitlines())}
    assert recs["dev-0"]["answer"] == "Great kettle.\nBoils fast." and recs["dev-0"]["reward"] == 1.0
    assert recs["dev-1"]["answer"] == "Quick pump." and recs["dev-1"]["reward"] == pytest.approx(2 / 3)
    prompt = recs["dev-0"]["prompt"]
    assert prompt.startswith('for "') and prompt.endswith(". Following the given patterns " + dev[0].input)
    preds = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert preds["task"] == "review-writing" and preds["golds"][0]["output"] == "Great kettle.\nBoils fast."


def test_chains_sft_and_rl_from_the_command_line(task, tiny_model, tmp_path):
    chains, sft, rl = tmp_path / "chains" / "chains.jsonl", tmp_path / "sft", tmp_path / "rl"
    stats = json.loads(tagpr("chains", "build", "--task", "reviews", "--data", str(DATA), "--split", "train",
                             "--out", str(chains.parent), "--labeller", "none", "--k", "2", "--samples", "1",
                             "--no-progress"))
    recs = [json.loads(x) for x in chains.read_text().splitlines()]
    assert len(recs) == 6 and {r["task"] for r in recs} == {"review-writing"}, stats
    assert all(check_chain(r["chain"], "reviews", len(r["items"])).valid for r in recs)
    assert all(r["reward"] >= 0.35 for r in recs)  # the free-text acceptance threshold
    # the teacher's own answers (the product's name) miss; rationalized chains write the gold's lines as the user
    # wrote them, not folded into one (blank lines between paragraphs fold, as the parser folds them)
    assert stats["accepted_by_source"] == {"rationalized": 6}
    assert all("\n" in r["answer"] and r["answer"] == task.parse(r["gold"]) for r in recs)
    assert task.parse(recs[2]["gold"]) == "It blends smoothies well enough.\nThe jug is hard to clean.\n- Sam"

    tagpr("train", "sft", "--chains", str(chains), "--out", str(sft), "--model", str(tiny_model), "--full",
          "--max-steps", "2", "--batch-size", "2", "--max-length", "512", "--save-steps", "10")
    summary = json.loads((sft / "sft_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["examples"] == 6

    tagpr("train", "rl", "--task", "reviews", "--data", str(DATA), "--model", str(sft), "--out", str(rl),
          "--no-prmu", "--stages", "guided", "--max-steps", "1", "--batch-size", "2", "--num-generations", "2",
          "--max-completion-length", "16", "--full")
    with open(rl / "rewards.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], float(r["step"])) for r in rows] == [("guided", 1.0)]
    assert 0.0 <= float(rows[0]["rewards/task/mean"]) <= 1.0
    assert json.loads((rl / "rl_summary.json").read_text())["task"] == "review-writing"
