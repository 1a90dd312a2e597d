"""The Python API: ``import tagpr`` is light, names load on first use, and the README's example runs as printed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tagpr

README = Path(__file__).resolve().parents[1] / "README.md"


# every public name: where it is defined (module:qualname), written out here rather than read from tagpr._API
PUBLIC = {
    "load_task": "tagpr.tasks:load_task", "load_task_file": "tagpr.tasks:load_task_file",
    "register_task": "tagpr.tasks:register_task", "include_path": "tagpr.tasks:include_path",
    "LaMPTask": "tagpr.tasks:LaMPTask", "Example": "tagpr.data.loading:Example",
    "load_split": "tagpr.data.loading:load_split", "write_examples": "tagpr.data.loading:write_examples",
    "generate_splits": "tagpr.data.synthetic:generate_splits",
    "evaluate": "tagpr.evaluation:evaluate", "EvalConfig": "tagpr.evaluation:EvalConfig",
    "Method": "tagpr.methods:Method", "RuleMethod": "tagpr.methods:RuleMethod", "RRP": "tagpr.methods:RRP",
    "register_method": "tagpr.methods:register_method", "get_method": "tagpr.methods:get_method",
    "compare_run_dirs": "tagpr.stats:compare_run_dirs", "make_backend": "tagpr.generation:make_backend",
    "build_chains": "tagpr.pipeline.chains:build_chains", "train_sft": "tagpr.training.sft:train_sft",
    "train_rl": "tagpr.training.rl:train_rl", "train_prmu": "tagpr.prmu.train:train_prmu_recipe",
    "run_recipe": "tagpr.end_to_end:run_recipe",
    "RunDir": "tagpr.runstate:RunDir", "read_jsonl": "tagpr.runstate:read_jsonl",
}


def test_import_is_light_and_every_public_name_is_the_documented_object():
    """``import tagpr`` imports no torch; each name of ``__all__``, by attribute access, is the function or class
    PUBLIC names (a callable, defined where PUBLIC says)."""
    code = ("import json, sys, tagpr; assert 'torch' not in sys.modules and 'tagpr.evaluation' not in sys.modules; "
            "names = [n for n in tagpr.__all__ if n != '__version__']; "
            "objs = {n: getattr(tagpr, n) for n in names}; "
            "print(json.dumps({n: [f'{o.__module__}:{o.__qualname__}', callable(o)] for n, o in objs.items()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {n: [where, True] for n, where in PUBLIC.items()}
    code = "import sys, tagpr; f = tagpr.evaluate; print('torch' in sys.modules, f.__module__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False", "tagpr.evaluation"]
    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        tagpr.evaluat  # noqa: B018


def test_every_public_name_resolves_and_has_a_docstring():
    for name in tagpr.__all__:
        if name == "__version__":
            continue
        obj = getattr(tagpr, name)
        assert (obj.__doc__ or "").strip(), name


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    from tagpr.methods import METHODS

    code, shown = re.search(r"## Python API.*?```python\n(.*?)```.*?```text\n(.*?)```", README.read_text(), re.S).groups()
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        METHODS.pop("profile-median", None)
    printed = capsys.readouterr().out.splitlines()
    assert printed == shown.splitlines()  # the README shows what it prints
    # the printed figures are the official metrics of the rules, computed here independently
    task, dev = tagpr.load_task("LaMP-3"), scope["dev"]
    golds = [e.gold for e in dev]
    medians = [str(sorted(int(task.item_output(p)) for p in e.profile)[len(e.profile) // 2]) for e in dev]
    mae = task.metrics(medians, golds)["mae"]
    assert f"MAE {mae:.3f}" in printed[2]
    saved = {m: json.loads((tmp_path / "runs" / "api" / m / "metrics.json").read_text()) for m in
             ("majority", "user-majority", "profile-median")}
    assert saved["profile-median"]["mae"] == pytest.approx(mae)
    assert saved["profile-median"]["mae"] < saved["majority"]["mae"]  # the profile helps on these users
    comp = scope["comparison"].to_json()
    assert comp["reference"] == "majority" and comp["n"] == 40


def test_settings_and_objects_share_a_name_in_the_api(tmp_path):
    """``backend=`` / ``teacher=`` take a setting (a string) or an object: both reach the run."""
    from fakes import FixedBackend

    splits = tagpr.generate_splits("LaMP-3", n_train=12, n_dev=4, seed=1)
    for split, exs in splits.items():
        tagpr.write_examples(exs, tmp_path / "data" / "LaMP_3", "LaMP-3", split)
    data = str(tmp_path / "data")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        tagpr.evaluate(tmp_path / "e0", task="LaMP-3", data=data, backend="nope")
    fixed = FixedBackend({e.input: "4" for e in splits["dev"]})
    m = tagpr.evaluate(tmp_path / "e1", task="LaMP-3", data=data, method="zero-shot", backend=fixed, progress=False)
    golds = [float(e.gold) for e in splits["dev"]]
    assert m["mae"] == pytest.approx(sum(abs(4 - g) for g in golds) / len(golds))
    stats = tagpr.build_chains(tmp_path / "chains", task="LaMP-3", data=data, teacher="analytic", labeller="none",
                               samples=1, progress=False)
    config = json.loads((tmp_path / "chains" / "chains.config.json").read_text())
    assert config["teacher"] == "analytic" and stats["examples"] == 12
    again = tagpr.build_chains(tmp_path / "chains", task="LaMP-3", data=data, teacher="analytic", labeller="none",
                               samples=1, progress=False)  # resumed: nothing to do, the same chains
    assert again == stats


def test_load_task_registers_a_record_file_and_train_prmu_takes_recipe_settings(registry, tmp_path):
    import inspect

    from tagpr.tasks import TASKS

    record = Path(__file__).resolve().parents[1] / "examples" / "tasks" / "review-writing.yaml"
    assert "review-writing" not in TASKS
    task = tagpr.load_task(str(record))
    assert task.name == "review-writing" and TASKS["review-writing"] is task
    assert tagpr.load_task("reviews") is task and tagpr.load_task(record) is task  # again: the same record, a no-op
    assert tagpr.load_task("LaMP-3").name == "LaMP-3"
    with pytest.raises(ValueError, match="no train questions"):
        tagpr.train_prmu(task="LaMP-3", data=str(tmp_path / "nowhere"), out=str(tmp_path / "p"))
    assert "settings" in inspect.signature(tagpr.train_prmu).parameters
