"""The command line: score (incl. the shared LaMP-7 copy-input floor), data, and a tiny end-to-end eval."""

import json
import sys

import pytest
from typer.testing import CliRunner

from tagpr.cli import app
from tagpr.data.loading import load_questions
from tagpr.tasks import get_task
from tagpr.data.loading import write_examples
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

runner = CliRunner()


def _copy_input_predictions(questions_path, out_path):
    t = get_task("LaMP-7")
    exs = load_questions(questions_path, t)
    out_path.write_text(json.dumps({"task": "LaMP_7", "golds": [{"id": e.id, "output": t.retrieval_query(e.input)} for e in exs]}))


def test_score_copy_input_floor_on_shared_lamp7(shared_lamp7, tmp_path):
    preds = tmp_path / "preds.json"
    _copy_input_predictions(shared_lamp7 / "dev_questions.json", preds)
    r = runner.invoke(app, ["score", "--task", "LaMP-7", "--predictions", str(preds), "--golds",
                            str(shared_lamp7 / "dev_outputs.json")])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["n"] == 989
    assert m["rouge-1"] == pytest.approx(0.4638, abs=5e-4)
    assert m["rouge-L"] == pytest.approx(0.4075, abs=5e-4)


def test_synth_validate_and_score(tmp_path):
    r = runner.invoke(app, ["data", "synth", "--task", "LaMP-2", "--out", str(tmp_path), "--train-users", "5",
                            "--dev-users", "30"])
    assert r.exit_code == 0, r.output
    assert "profile-aware" in r.stdout
    r = runner.invoke(app, ["data", "validate", "--task", "LaMP-2", "--data", str(tmp_path), "--split", "dev"])
    assert r.exit_code == 0 and json.loads(r.stdout)["examples"] == 30
    golds = tmp_path / "LaMP_2" / "dev_outputs.json"
    r = runner.invoke(app, ["score", "--task", "LaMP_2", "--predictions", str(golds), "--golds", str(golds)])
    assert json.loads(r.stdout)["accuracy"] == 1.0


def test_score_reports_missing_predictions(tmp_path):
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"task": "LaMP_3", "golds": [{"id": "1", "output": "3"}, {"id": "2", "output": "4"}]}))
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"id": "1", "output": "3"}]))
    r = runner.invoke(app, ["score", "--task", "LaMP-3", "--predictions", str(p), "--golds", str(g)])
    assert r.exit_code == 2 and "id='2'" in r.output


def test_eval_bad_data_is_a_clear_error(tmp_path):
    d = tmp_path / "LaMP_7"
    d.mkdir()
    (d / "dev_questions.json").write_text("<html>oops</html>")
    r = runner.invoke(app, ["eval", "--task", "LaMP-7", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                            "--model", "unused"])
    assert r.exit_code == 2 and "HTML page" in r.output


def test_tiny_end_to_end_eval_with_embedded_model(tmp_path):
    """CI's end-to-end pass: the embedded SmolLM2 through `tagpr eval` on a few synthetic examples."""
    assert runner.invoke(app, ["data", "synth", "--task", "LaMP-7", "--out", str(tmp_path), "--train-users", "2",
                               "--dev-users", "4"]).exit_code == 0
    args = ["eval", "--task", "LaMP-7", "--data", str(tmp_path), "--split", "dev", "--method", "rag", "--k", "2",
            "--limit", "3", "--out", str(tmp_path / "run"), "--max-new-tokens", "24", "--batch-size", "2",
            "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n"] == 3 and 0.0 <= m["rouge-1"] <= 1.0 and m["mean_completion_tokens"] > 0
    recs = [json.loads(x) for x in (tmp_path / "run" / "examples.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(r["output"] for r in recs)
    assert "are written by a person" in recs[0]["prompt"]
    # a second invocation resumes: nothing left to do, same metrics
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and json.loads((tmp_path / "run" / "metrics.json").read_text())["rouge-1"] == m["rouge-1"]


def test_tiny_rrp_eval_with_embedded_model(tmp_path):
    """RRP end to end on the embedded model: the controller keeps the template, answers are valid."""
    assert runner.invoke(app, ["data", "synth", "--task", "LaMP-2", "--out", str(tmp_path), "--train-users", "2",
                               "--dev-users", "3"]).exit_code == 0
    r = runner.invoke(app, ["eval", "--task", "LaMP-2", "--data", str(tmp_path), "--method", "rrp", "--k", "2",
                            "--limit", "2", "--out", str(tmp_path / "rrp"), "--budgets", "12,12,12,6",
                            "--batch-size", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "rrp" / "metrics.json").read_text())
    assert m["method"] == "rrp" and m["n"] == 2
    assert m["template_adherence"] == 1.0 and m["valid_answer_rate"] == 1.0  # intervention keeps both
    assert m["mean_completion_tokens"] <= 2 * (12 + 12 + 12 + 6)  # budgets hold (one format retry at most)


@pytest.mark.slow
def test_quickstart_small(tmp_path):
    r = runner.invoke(app, ["quickstart", "--out", str(tmp_path), "--n", "6", "--tasks", "LaMP-3,LaMP-7"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "comparison.json").read_text())
    assert {(x["task"], x["method"]) for x in rows} >= {("LaMP-3", "zero-shot"), ("LaMP-3", "rag"), ("LaMP-7", "rag")}


def test_tiny_tagpr_recipe_end_to_end(tmp_path):
    """CI's pass through `tagpr run recipes/quickstart.yaml` with tiny step counts: chains -> SFT -> PRMU ->
    guided RL -> exploratory RL -> evaluation of every stage, comparison table and plot; a second call resumes."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    sets = ["run.synthetic_train_users=40", "run.synthetic_dev_users=4", "run.rl_offset=20", "run.rl_limit=4",
            "chains.limit=20", "run.baselines=[zero-shot]",
            "chains.samples=1", "sft.max_steps=1", "sft.batch_size=2", "sft.grad_accum=1", "sft.save_steps=1", "prmu.epochs=2",
            "rl.max_steps=1", "rl.batch_size=2", "rl.num_generations=2", "rl.max_completion_length=8",
            "eval.limit=2", "eval.max_new_tokens=8", "eval.batch_size=2"]
    args = ["run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    comp = json.loads((out / "comparison.json").read_text())
    assert [x["method"] for x in comp["rows"]] == ["zero-shot", "tagpr: sft", "tagpr: rl guided", "tagpr: rl exploratory"]
    assert all(x["n"] == 2 and 0.0 <= x["mean_reward"] <= 1.0 for x in comp["rows"])
    assert "tag_validity" in comp["rows"][1] and (out / "comparison.png").stat().st_size > 1000
    if sys.platform.startswith("linux"):  # the peak memory of every stage that ran, for the reader of the run
        assert {"sft", "rl", "eval"} <= set(comp["peak_rss_gb"]) and all(v > 0.1 for v in comp["peak_rss_gb"].values())
    assert "| tagpr: rl exploratory |" in (out / "comparison.md").read_text()
    rl = json.loads((out / "rl" / "rl_summary.json").read_text())
    assert [s["weights"] for s in rl["stages"]] == [{"task": 1.0, "tag": 0.5, "prmu": 0.5}, {"task": 1.0, "tag": 0.0, "prmu": 0.0}]
    assert rl["stages"][0]["model_in"] == str(out / "sft") and (out / "prmu" / "metrics.json").exists()
    assert (out / "final").is_symlink() and (out / "final" / "model.safetensors.index.json").exists()
    assert json.loads((out / "final" / "tagpr_prompt.json").read_text()) == {"prompt_style": "compact"}
    # resumed: every step is found finished, nothing is trained again
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    again = json.loads((out / "comparison.json").read_text())
    assert [x["mean_reward"] for x in again["rows"]] == [x["mean_reward"] for x in comp["rows"]]
    assert again["seconds"]["sft"] < 5 and again["seconds"]["rl"] < 10
    # the no-exploratory ablation is the full run's guided stage: its row and eval directory are reused, not rebuilt
    r = runner.invoke(app, args + ["--ablation", "no-exploratory"])
    assert r.exit_code == 0, r.output
    abl = json.loads((out / "ablations.json").read_text())
    assert [x["method"] for x in abl] == ["full", "ablation: no-exploratory"]
    guided = next(x for x in comp["rows"] if x["method"] == "tagpr: rl guided")
    assert abl[1]["mean_reward"] == guided["mean_reward"] and abl[0]["mean_reward"] == comp["rows"][-1]["mean_reward"]
    assert not (out / "eval" / "ablation: no-exploratory").exists() and not (out / "rl-no-exploratory").exists()
    assert "| ablation: no-exploratory |" in (out / "ablations.md").read_text()
    r = runner.invoke(app, args[:2] + ["--set", "sft.max_steps"])
    assert r.exit_code == 2 and "SECTION.KEY=VALUE" in r.output


# (argv, what the one line must say): user errors of every command.  {d}: a LaMP-3 data directory, {tmp}: an empty
# temporary directory, {q}: the quickstart recipe, {typo} / {bad_yaml} / {bad_chains} / {bad_chain_lines}: bad files.
BAD_INVOCATIONS = [
    (["eval", "--task", "LaMP-9", "--data", "{d}", "--out", "{tmp}/e"], "unknown task 'LaMP-9'"),
    (["eval", "--task", "LaMP-3", "--data", "{tmp}/nowhere", "--out", "{tmp}/e"], "no dev questions"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--method", "bogus", "--out", "{tmp}/e"], "method: unknown method 'bogus'"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--method", "copy-input", "--out", "{tmp}/e"], "copy-input is a floor only"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--k", "0", "--out", "{tmp}/e"], "k: Input should be greater"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--limit", "-1", "--out", "{tmp}/e"], "limit: Input should be greater than or equal to 1"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--method", "rrp", "--candidates", "3", "--out", "{tmp}/e"], "needs sampling"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--backend", "nope", "--out", "{tmp}/e"], "unknown backend 'nope'"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--model", "{tmp}/no-model", "--out", "{tmp}/e"], "no-model: no such directory"),
    (["eval", "--task", "LaMP-3", "--out", "{tmp}/e"], "Missing option '--data'"),
    (["eval", "--task", "LaMP-3", "--data", "{d}", "--limit", "many", "--out", "{tmp}/e"], "Invalid value for '--limit'"),
    (["evl", "--task", "LaMP-3"], "No such command 'evl'"),
    (["run", "{bad_yaml}", "--out", "{tmp}/r"], "unknown key 'not'"),
    (["run", "{q}", "--out", "{tmp}/r", "--set", "sft.max_step=3"], "did you mean 'max_steps'"),
    (["run", "{q}", "--out", "{tmp}/r", "--set", "nodot"], "--set takes SECTION.KEY=VALUE"),
    (["run", "{q}", "--out", "{tmp}/r", "--ablation", "bogus"], "unknown ablations"),
    (["run", "{tmp}/missing.yaml", "--out", "{tmp}/r"], "cannot read the recipe"),
    (["run", "{q}", "--out", "{d}", "--overwrite"], "holds files but not a tagpr run (no recipe.json)"),
    (["train", "rl", "--task", "LaMP-9", "--data", "{d}", "--out", "{tmp}/rl"], "unknown task 'LaMP-9'"),
    (["train", "rl", "--task", "LaMP-3", "--data", "{d}", "--out", "{tmp}/rl", "--loss-type", "nope"], "loss_type"),
    (["train", "rl", "--task", "LaMP-3", "--data", "{d}", "--out", "{tmp}/rl", "--no-prmu", "--model", "./no/such/sft"],
     "no/such/sft: no such directory"),
    (["train", "rl", "--task", "LaMP-3", "--data", "{d}", "--split", "dev", "--out", "{d}", "--no-prmu", "--overwrite"],
     "holds files but not an RL run"),
    (["train", "sft", "--chains", "{tmp}/missing.jsonl", "--out", "{tmp}/s"], "missing.jsonl"),
    (["train", "sft", "--chains", "{bad_chains}", "--out", "{tmp}/s"], "bad_chains.jsonl, line 2, example id='b': missing field 'chain'"),
    (["train", "sft", "--chains", "{bad_chains}", "--out", "{tmp}/s", "--model", "/no/model"], "/no/model: no such directory"),
    (["train", "sft", "--config", "{typo}"], "did you mean 'max_steps'"),
    (["train", "prmu", "--config", "{typo}", "--task", "LaMP-3", "--data", "{d}", "--out", "{tmp}/p"], "unknown key 'sft'"),
    (["train", "prmu", "--data", "{d}", "--out", "{tmp}/p"], "task: Field required"),
    (["train", "prmu", "--task", "LaMP-3", "--data", "{tmp}/nowhere", "--out", "{tmp}/p"], "no train questions"),
    (["chains", "build", "--task", "LaMP-3", "--data", "{tmp}/nowhere", "--out", "{tmp}/c"], "no train questions"),
    (["chains", "build", "--task", "LaMP-3", "--data", "{d}", "--out", "{tmp}/c.jsonl"], "a directory (chains.jsonl is written inside it)"),
    (["chains", "build", "--task", "LaMP-3", "--data", "{d}", "--teacher", "model", "--backend", "gpt", "--out", "{tmp}/c"],
     "unknown backend 'gpt'"),
    (["chains", "stats", "{tmp}/missing.jsonl"], "no such chains file"),
    (["tags", "check", "--task", "LaMP-3", "{bad_chain_lines}"], "bad_lines.jsonl, line 2, example id='b': missing field 'text'"),
    (["prmu", "score", "--model", "{tmp}/prmu", "--task", "LaMP-3", "--data", "{d}", "--responses", "{bad_chain_lines}"],
     "bad_lines.jsonl, line 2, example id='b': missing field 'response'"),
    (["data", "loo", "--task", "LaMP-1", "--data", "{d}", "--out", "{tmp}/l"], "LaMP-1: cannot build"),
    (["data", "validate", "--task", "LaMP-3", "--data", "{tmp}/nowhere"], "no dev questions"),
    (["report", "{tmp}/nowhere"], "no such directory"),
    (["report", "{d}"], "not a tagpr run directory"),
]


@pytest.fixture
def bad_files(tmp_path, monkeypatch):
    """The files BAD_INVOCATIONS names; anything heavy (a model, a trainer) fails the test if it is reached."""
    from tagpr.data.synthetic import generate

    write_examples(generate("LaMP-3", 6, seed=1), tmp_path / "data" / "LaMP_3", "LaMP-3", "dev")
    files = {"d": tmp_path / "data", "tmp": tmp_path, "q": RECIPES / "quickstart.yaml",
             "bad_yaml": tmp_path / "bad.yaml", "typo": tmp_path / "typo.yaml",
             "bad_chains": tmp_path / "bad_chains.jsonl", "bad_chain_lines": tmp_path / "bad_lines.jsonl"}
    files["bad_yaml"].write_text('{"not": "a list"}')
    files["typo"].write_text("sft:\n  max_step: 3\n")
    files["bad_chains"].write_text('{"id": "a", "task": "LaMP-3", "input": "x", "items": [], "chain": "c"}\n'
                                   '{"id": "b", "task": "LaMP-3", "input": "x", "items": []}\n')
    files["bad_chain_lines"].write_text('{"id": "a", "text": "t", "response": "r"}\n{"id": "b"}\n')

    def heavy(*a, **k):
        raise AssertionError("heavy work started before the user error was found")

    for target in ("tagpr.generation.make_backend", "tagpr.evaluation.make_backend", "tagpr.training.sft.load_policy",
                   "tagpr.training.rl.load_policy", "tagpr.prmu.train.train_prmu", "tagpr.prmu.reward.PRMUScorer"):
        monkeypatch.setattr(target, heavy)
    return {k: str(v) for k, v in files.items()}


@pytest.mark.parametrize("argv,says", BAD_INVOCATIONS, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(BAD_INVOCATIONS)])
def test_every_user_error_is_one_line_and_exit_code_2(bad_files, argv, says):
    res = CliRunner().invoke(app, [a.format(**bad_files) for a in argv])
    out = res.output.strip()
    assert res.exit_code == 2, (argv, res.exit_code, out[-800:], res.exception)
    assert "Traceback" not in out and len(out.splitlines()) == 1, (argv, out)
    assert says.format(**bad_files) in out, (argv, out)


def test_the_table_covers_every_command_family():
    assert len(BAD_INVOCATIONS) >= 15
    assert {a[0] for a, _ in BAD_INVOCATIONS} >= {"eval", "run", "train", "chains", "tags", "prmu", "data", "report"}


@pytest.mark.parametrize("argv,model", [(["eval"], "tagpr.evaluation:EvalConfig"),
                                        (["chains", "build"], "tagpr.pipeline.chains:ChainsConfig"),
                                        (["train", "prmu"], "tagpr.prmu.train:PRMURecipe")])
def test_defaults_the_help_shows_are_the_settings_models(argv, model):
    """Options default to None (the settings model's default applies); a ``[default: X]`` in a help text is checked
    against the model, so the help cannot drift from the one place the defaults are held."""
    import importlib
    import re

    import typer.main

    module, name = model.split(":")
    fields = getattr(importlib.import_module(module), name).model_fields
    command = typer.main.get_command(app)
    for part in argv:
        command = command.commands[part]
    shown = 0
    for param in command.params:
        if param.name in fields and param.name not in ("overwrite", "progress"):
            assert param.default is None, param.name  # not given: the model's default
        said = re.search(r"\[default: ([^\]]+)\]", getattr(param, "help", None) or "")
        if said:
            default = fields[param.name].default
            assert said.group(1) == ("on" if default is True else "off" if default is False else str(default)), param.name
            shown += 1
    assert shown >= 1


def test_a_mistyped_run_directory_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    from tagpr.embedded import check_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    check_model("runs/sft")
    with pytest.raises(ValueError, match=r"^model runs/sft-typo: no such directory$"):
        check_model("runs/sft-typo")
    check_model("Qwen/Qwen2.5-0.5B-Instruct")  # no local Qwen/: a hub id, left to the hub
    res = CliRunner().invoke(app, ["eval", "--task", "LaMP-3", "--data", "d", "--model", "runs/sft-typo", "--out", "e"])
    assert res.exit_code == 2 and "model runs/sft-typo: no such directory" in res.output


def test_help_defaults_held_elsewhere_match_their_owners():
    """Defaults a help text states in words (not ``[default: X]``) are the owning constants': the local backends'
    batch sizes, TagPR's token budget and each answer kind's, and each kind's chain acceptance threshold."""
    import typer.main

    from tagpr.generation import LOCAL_BATCH
    from tagpr.methods import TagPR
    from tagpr.scoring import FreeText, LabelSet, RatingScale

    command = typer.main.get_command(app)
    helps = {p.name: p.help for p in command.commands["eval"].params}
    assert "(default: " + ", ".join(f"{k} {v}" for k, v in LOCAL_BATCH.items()) + ")" in helps["batch_size"]
    assert set(LOCAL_BATCH) == {"openvino", "ct2", "transformers"}
    tokens = [k.model_fields["max_new_tokens"].default for k in (LabelSet, RatingScale, FreeText)]
    assert f"tagpr {TagPR.max_new_tokens}, else" in helps["max_new_tokens"]
    assert "(labels {}, ratings {}, text {})".format(*tokens) in helps["max_new_tokens"]
    helps = {p.name: p.help for p in command.commands["chains"].commands["build"].params}
    thresholds = " / ".join(f"{k.accept_threshold:g}" for k in (LabelSet, RatingScale, FreeText))
    assert f"(default by task kind: {thresholds})" in helps["threshold"]
