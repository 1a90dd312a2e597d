"""Tasks as data: the built-in YAML records reproduce the former Python registry byte for byte; users' records are
validated with errors naming the file and the field; the registry, include path, TAGPR_TASKS and --include-path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from task_snapshot import BUILTIN, snapshot
from tagpr import tasks
from tagpr.cli import app
from tagpr.prompts import WhitespaceTokenizer, build_rag_prompt
from tagpr.tasks import BUILTIN_DIR, TASKS, get_task, include_path, load_task_file, register_task

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tasks"
runner = CliRunner()


def lamp3_record() -> dict:
    return yaml.safe_load((BUILTIN_DIR / "lamp-3.yaml").read_text())


def write(tmp_path: Path, record: dict, name: str = "mine.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(record, sort_keys=False))
    return p


def test_builtin_records_reproduce_the_python_registry():
    """Every built-in task makes what the Python registry made before the records (tests/task_snapshot.py): queries,
    documents, rendered items, questions, RAG prompts under 5 budgets, TagPR / RRP prompts, parses, rewards, metrics,
    download URLs."""
    want = json.loads((Path(__file__).with_name("data") / "task_snapshot.json").read_text())
    got = json.loads(json.dumps(snapshot(BUILTIN)))
    assert list(got) == list(want) == BUILTIN
    for name in BUILTIN:
        for key in want[name]:
            assert got[name][key] == want[name][key], (name, key)


def test_builtin_records_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tagpr"]
    shipped = {p for g in globs for p in (REPO / "src" / "tagpr").glob(g)}
    records = sorted(BUILTIN_DIR.glob("*.yaml"))
    assert len(records) == len(BUILTIN) and set(records) <= shipped
    assert [tasks.SOURCES[n] for n in BUILTIN] == [str(p) for p in records]


@pytest.mark.parametrize("change,message", [
    ({"itme": "{text}"}, "unknown key 'itme'; did you mean 'item'?"),
    ({"answer": {"kind": "rating", "low": 5, "high": 1}}, "answer.rating: high (1) must be above low (5)"),
    ({"answer": {"kind": "ratings"}}, "answer: Input tag 'ratings' found using 'kind' does not match any of the "
                                      "expected tags: 'classification', 'rating', 'generation'"),
    ({"answer": {"kind": "classification", "labels": ["a", "b", "a"]}}, "label 'a' is listed twice"),
    ({"document": "{txt}"}, "document: {txt} is not a profile field (text, score)"),
    ({"item": "{score is {text}"}, "item: not a format template"),
    ({"output_field": "stars"}, "output_field 'stars' is not one of profile_fields (text, score)"),
    ({"query": {"rule": "after_marker", "markr": "review:"}}, "unknown key 'markr'; did you mean 'marker'?"),
    ({"compose": {"rule": "hook", "hook": "insert_after_titel"}},
     "unknown hook 'insert_after_titel'; did you mean 'insert_after_title'?"),
    ({"name": "my task"}, "name: String should match pattern"),
])
def test_record_errors_name_the_file_and_the_field(tmp_path, change, message):
    p = write(tmp_path, {**lamp3_record(), "name": "mine", "aliases": [], **change})
    with pytest.raises(ValueError) as err:
        load_task_file(p)
    assert str(err.value).startswith(f"{p}: ") and message in str(err.value), str(err.value)


def test_unreadable_records_are_one_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad.yaml: not valid YAML"):
        load_task_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list.yaml: a task record is a mapping of keys .*not list"):
        load_task_file(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="no such task directory or record file"):
        include_path(tmp_path / "missing")


def test_names_and_aliases_stay_unique_and_lookups_follow_the_registry(tmp_path, registry):
    record = {**{k: v for k, v in lamp3_record().items() if k != "official_id"}, "name": "stars", "aliases": ["rating-x"]}
    assert register_task(lamp3_record()) is TASKS["LaMP-3"]  # the same record again: nothing changes
    with pytest.raises(ValueError, match="task LaMP-3 is already registered"):
        register_task({**lamp3_record(), "title": "other"})
    with pytest.raises(ValueError, match="stars's name or alias 'lamp_7' already names LaMP-7"):
        register_task({**record, "aliases": ["lamp_7"]})
    t = register_task(write(tmp_path, record))
    assert get_task("Rating_X") is t and get_task("STARS") is t and t.official_id == "stars"
    assert register_task(write(tmp_path, record, "again.yaml")) is t  # the same record again: nothing changes
    with pytest.raises(ValueError, match="task stars is already registered"):
        register_task({**record, "title": "other"})
    t2 = register_task({**record, "aliases": ["rating-y"]}, replace=True)
    assert get_task("rating-y") is t2 and TASKS["stars"] is t2
    with pytest.raises(KeyError, match="unknown task 'rating-x'"):
        get_task("rating-x")  # the replaced record's alias went with it
    assert get_task("LaMP-3").name == "LaMP-3" and get_task("lamp3").name == "LaMP-3"


def test_a_hook_beside_the_record_composes_the_prompt(tmp_path, registry):
    (tmp_path / "hooks.py").write_text("def around(source, items):\n    return f'<{items}> {source}'\n")
    record = {**lamp3_record(), "name": "hooked", "aliases": [],
              "compose": {"rule": "hook", "hook": "hooks.py:around", "counted": "<>"}}
    t = register_task(write(tmp_path, record))
    items = [{"text": "great kettle", "score": "5"}]
    assert build_rag_prompt(t, "review: ok", items, WhitespaceTokenizer()) == '<5 is the score for "great kettle" > review: ok'
    assert t.template_overhead(3) == 5 and t.compose_words == "<>"
    record["compose"]["hook"] = "hooks.py:missing"
    with pytest.raises(ValueError, match="has no function 'missing'"):
        load_task_file(write(tmp_path, record))


def test_tagpr_tasks_env_var_registers_in_every_process():
    code = "from tagpr.tasks import get_task; t = get_task('reviews'); print(t.name, t.answers.multiline)"
    env = {**os.environ, "TAGPR_TASKS": os.pathsep.join([str(EXAMPLE), ""])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["review-writing", "True"]


def test_include_path_option_lists_the_task_and_reports_a_bad_record_in_one_line(tmp_path, registry):
    r = runner.invoke(app, ["--include-path", str(EXAMPLE), "tasks"])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.stdout.splitlines() if line.startswith("│ review-") or "│ review-" in line)
    assert "generation" in row and "rouge-1" in r.stdout
    assert f"review-writing: {EXAMPLE / 'review-writing.yaml'}" in r.stdout.splitlines()
    bad = write(tmp_path, {**lamp3_record(), "name": "bad", "aliases": [], "itme": "x"})
    r = runner.invoke(app, ["--include-path", str(tmp_path), "tasks"])
    assert r.exit_code == 2 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert f"error: {bad}: unknown key 'itme'; did you mean 'item'?" in r.output
