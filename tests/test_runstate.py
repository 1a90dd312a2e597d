"""The one JSONL reader: a job's own log tolerates the line a kill cut short; user input gets an error naming the
file, the line, the example id and the field."""

import pytest

from tagpr.runstate import iter_jsonl, read_jsonl, truncate_partial_line


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
