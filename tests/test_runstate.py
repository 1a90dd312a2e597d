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
