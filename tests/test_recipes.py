"""Recipes are validated strictly: an unknown section or key is an error naming it and the nearest known one,
before anything runs; every shipped recipe passes."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tagpr.cli import app
from tagpr.end_to_end import check_recipe
from tagpr.recipes import read_recipe
from tagpr.training.rl import load_rl_recipe
from tagpr.training.sft import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name", ["quickstart.yaml", "synthetic_rating.yaml", "synthetic_classification.yaml",
                                  "lamp3_real.yaml", "lamp7_real.yaml"])
def test_shipped_run_recipes_pass(name):
    raw = read_recipe(RECIPES / name)
    if raw["run"].get("data", "") is None and raw["run"].get("train_from") == "profiles":
        raw["run"]["data"] = "/some/lamp/dir"  # what --set run.data=DIR gives
    check_recipe(raw, name)


@pytest.mark.parametrize("raw,message", [
    ({"not": "a list"}, "unknown key 'not'; known: run, chains, sft, prmu, rl, eval"),
    ({"evals": {}}, "unknown key 'evals'; did you mean 'eval'?"),
    ({"sft": {"max_step": 3}}, "sft: unknown key 'max_step'; did you mean 'max_steps'?"),
    ({"rl": {"max_step": 3}}, "rl: unknown key 'max_step'; did you mean 'max_steps'?"),
    ({"rl": {"stages": [{"name": "g", "wieghts": {"task": 1.0}}]}}, "rl.stages[0]: unknown key 'wieghts'; did you mean 'weights'?"),
    ({"rl": {"model": "x"}}, "rl.model is set by tagpr run itself"),
    ({"chains": {"sampels": 2}}, "chains: unknown key 'sampels'; did you mean 'samples'?"),
    ({"prmu": {"epoch": 2}}, "prmu: unknown key 'epoch'; did you mean 'epochs'?"),
    ({"run": {"synthetic_dev_user": 4}}, "run: unknown key 'synthetic_dev_user'; did you mean 'synthetic_dev_users'?"),
    ({"run": {"train_from": "profiles"}}, "run.train_from: profiles builds training questions"),
    ({"eval": {"limit": 0}}, "eval.limit: Input should be greater than or equal to 1"),
    ({"sft": ["a", "list"]}, "section 'sft' must be a mapping, not list"),
    ({"run": {"rl_offset": 10}, "chains": {"limit": 20}}, "chains.limit (20) reads past run.rl_offset (10), so SFT"),
    ({"run": {"rl_offset": 10}}, "chains.limit (None) reads past run.rl_offset (10)"),
])
def test_bad_recipes_are_refused_with_the_key_and_its_nearest_name(raw, message):
    with pytest.raises(ValueError) as e:
        check_recipe(raw, "r.yaml")
    assert message in str(e.value) and str(e.value).startswith("r.yaml")


def test_training_commands_refuse_misspelt_keys_too(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"sft": {"chains": "c.jsonl", "out": "o", "max_step": 2},
                                 "rl": {"task": "LaMP-3", "data": "d", "out": "o", "lerning_rate": 1e-5}}))
    with pytest.raises(ValueError, match="unknown key 'max_step'; did you mean 'max_steps'"):
        load_recipe(p, {})
    with pytest.raises(ValueError, match="unknown key 'lerning_rate'; did you mean 'learning_rate'"):
        load_rl_recipe(p, {})


def test_cli_run_with_a_bad_recipe_is_one_line_and_exit_2_and_writes_nothing(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text('{"not": "a list"}')
    res = CliRunner().invoke(app, ["run", str(p), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "unknown key 'not'" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing started
    res = CliRunner().invoke(app, ["run", str(RECIPES / "quickstart.yaml"), "--out", str(tmp_path / "o2"),
                                   "--set", "sft.max_step=3"])
    assert res.exit_code == 2 and "did you mean 'max_steps'" in res.output and not (tmp_path / "o2").exists()


def test_extends_merges_section_by_section_and_refuses_cycles(tmp_path):
    preset = read_recipe(RECIPES / "synthetic_rating.yaml")
    base = read_recipe(RECIPES / "quickstart.yaml")
    assert "extends" not in preset
    assert preset["run"]["synthetic_dev_users"] == 200 and preset["eval"]["limit"] == 200
    assert preset["run"]["task"] == base["run"]["task"] == "LaMP-3"  # kept from the base
    assert preset["rl"]["num_generations"] == base["rl"]["num_generations"]  # kept from the base
    assert preset["rl"]["max_steps"] == 12 and preset["chains"]["rule"] == "each"  # overridden
    assert preset["chains"]["style"] == base["chains"]["style"] == "compact"
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nrun: {seed: 1}\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="makes a cycle"):
        read_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ValueError, match="missing.yaml: cannot read the recipe"):
        read_recipe(tmp_path / "c.yaml")


def test_length_warnings_name_a_generation_limit_that_cuts_the_chains(tmp_path):
    """A recipe whose RL or eval token limit is shorter than most training chains gets a warning naming the key
    and the length that fits (LaMP-7 chains of ~277 tokens ran into rl.max_completion_length 224: no rewards)."""
    from tagpr.embedded import ensure_embedded_lm
    from tagpr.end_to_end import length_warnings

    chain = "<think>\n<conclude>" + " word" * 150 + "</conclude>\n</think>\n<answer>5</answer>"
    rec = {"task": "LaMP-3", "input": "q", "items": [], "chain": chain}
    path = tmp_path / "chains.jsonl"
    path.write_text("\n".join(json.dumps(rec) for _ in range(5)) + "\n")
    got = length_warnings(path, ensure_embedded_lm(), {"rl.max_completion_length": 64, "eval.max_new_tokens": 400})
    assert len(got) == 1 and got[0].startswith("rl.max_completion_length=64 is shorter than 100% of the training chains")
    longest = int(got[0].rsplit(">= ", 1)[1])
    assert 150 < longest < 200
    assert length_warnings(path, ensure_embedded_lm(), {"rl.max_completion_length": longest}) == []
    assert length_warnings(tmp_path / "none.jsonl", ensure_embedded_lm(), {"rl.max_completion_length": 1}) == []
