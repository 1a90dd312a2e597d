"""The one JSONL reader: a job's own log tolerates the line a kill cut short; user input gets an error naming the
file, the line, the example id and the field.  The run directory: settings identity, resume, overwrite, atomic writes."""

import json

import pytest
from pydantic import BaseModel

from tagpr.runstate import RunDir, RunMismatchError, iter_jsonl, read_jsonl, truncate_partial_line, write_json


def test_tolerant_reading_skips_what_a_kill_left_and_a_missing_file_is_empty(tmp_path):
    p = tmp_path / "log.jsonl"
    assert read_jsonl(p, ("id",), tolerant=True) == []
    p.write_text('{"id": "a", "x": 1}\n\n[1, 2]\n{"x": 2}\n{"id": "b"}\n{"id": "c", "x"')
    assert [r["id"] for r in read_jsonl(p, ("id",), tolerant=True)] == ["a", "b"]
    truncate_partial_line(p)
    assert p.read_text().endswith('{"id": "b"}\n')


@pytest.mark.parametrize("text,message", [
    ('{"id": "a", "text": "t"}\n{"id": "b"}\n', "line 2, example id='b': missing field 'text'"),
    ('{"id": "a", "text": "t"}\nnot json\n', "line 2: not JSON"),
    ('\n["a"]\n', "line 2: not a JSON object"),
])
def test_strict_reading_names_the_file_line_id_and_field(tmp_path, text, message):
    p = tmp_path / "in.jsonl"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        read_jsonl(p, ("id", "text"))
    assert str(e.value) == f"{p}, {message}"
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl: no such file"):
        list(iter_jsonl(tmp_path / "nowhere.jsonl"))


class Settings(BaseModel):
    name: str
    size: int = 1
    note: str = ""  # not part of the identity

    def identity(self):
        return self.model_dump(exclude={"note"})


def test_run_dir_resumes_same_settings_refuses_others_and_overwrite_discards(tmp_path):
    d = RunDir(tmp_path / "run", "settings.json", ("log.jsonl", "sub"), "a test run")
    d.start(Settings(name="a"), Settings.identity)
    with d.appending("log.jsonl") as append:
        append([{"id": 1}, {"id": "two", "x": [1, 2]}])
    (d.root / "sub").mkdir()
    d.start(Settings(name="a", note="changed"), Settings.identity)  # the identity matches: resumed, the log kept
    assert d.records("log.jsonl") == {"1": {"id": 1}, "two": {"id": "two", "x": [1, 2]}}
    assert json.loads((d.root / "settings.json").read_text())["note"] == "changed"
    with pytest.raises(RunMismatchError) as e:
        d.start(Settings(name="a", size=2), Settings.identity)
    assert str(e.value) == f"{d.root} holds a test run with other settings {{'size': (1, 2)}}; use another --out or --overwrite"
    d.start(Settings(name="a", size=2), Settings.identity, overwrite=True)
    assert sorted(p.name for p in d.root.iterdir()) == ["settings.json"] and d.records("log.jsonl") == {}


def test_appending_cuts_the_torn_line_a_kill_left(tmp_path):
    d = RunDir(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"id": "a"}\n{"id": "b", "x": ')
    with d.appending("log.jsonl") as append:
        append([{"id": "c"}])
    assert (tmp_path / "log.jsonl").read_text() == '{"id": "a"}\n{"id": "c"}\n'


def test_discarding_a_whole_directory_only_when_it_holds_the_job(tmp_path):
    mine = RunDir(tmp_path / "mine", "recipe.json", ("*",), "a tagpr run")
    mine.start(Settings(name="x"), Settings.identity)
    (mine.root / "model").mkdir()
    mine.discard()
    assert not mine.root.exists()
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.json").write_text("{}")
    with pytest.raises(ValueError, match="holds files but not a tagpr run"):
        RunDir(other, "recipe.json", ("*",), "a tagpr run").discard()
    assert (other / "keep.json").exists()


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"mae": 0.5})

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("tagpr.runstate.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"mae": 0.25})
    assert json.loads(path.read_text()) == {"mae": 0.5}  # the old file whole, never half of the new one


def test_overwrite_refuses_to_delete_an_input_or_what_the_job_does_not_write(tmp_path):
    run = RunDir(tmp_path / "run", "recipe.json", ("*",), "a tagpr run", owns=("sft", "eval"))
    run.start(Settings(name="x"), Settings.identity)
    (run.root / "sft").mkdir()
    (run.root / "sft" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"--overwrite would delete .*sft, an input of this job inside"):
        run.discard(inputs=(None, "Qwen/Qwen2.5-0.5B", run.root / "sft"))
    (run.root / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds notes.txt, not written by a tagpr run"):
        run.discard()
    assert (run.root / "notes.txt").read_text() == "mine" and (run.root / "sft" / "config.json").exists()
    (run.root / "notes.txt").unlink()
    run.discard(inputs=(tmp_path / "elsewhere",))
    assert not run.root.exists()
    # a job that deletes named files only refuses for an input among them, not for one beside them
    named = RunDir(tmp_path / "ev", "config.json", ("examples.jsonl",), "an evaluation")
    named.start(Settings(name="x"), Settings.identity)
    (named.root / "model").mkdir()
    named.discard(inputs=(named.root / "model",))
    assert (named.root / "model").is_dir() and not named.settings_path.exists()


def test_a_run_without_its_settings_file_is_known_by_its_markers(tmp_path):
    old = tmp_path / "sft"
    old.mkdir()
    (old / "sft_summary.json").write_text("{}")
    (old / "model.safetensors").write_bytes(b"x")
    RunDir(old, "sft_recipe.json", ("*",), "an SFT run", markers=("sft_summary.json", "checkpoint-*")).discard()
    assert not old.exists()
