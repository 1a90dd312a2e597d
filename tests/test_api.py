"""The Python API: ``import tagpr`` is light, names load on first use, and the README's example runs as printed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tagpr

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_is_light_and_names_load_on_first_use():
    code = ("import sys, tagpr; assert 'torch' not in sys.modules and 'tagpr.evaluation' not in sys.modules; "
            "f = tagpr.evaluate; assert f.__module__ == 'tagpr.evaluation' and 'torch' not in sys.modules; "
            "print(sorted(set(tagpr.__all__) - set(dir(tagpr))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
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
