"""Official-format loading, and one clear error (file, example id, field) per bad input."""

import json

import pytest

from tagpr.data.loading import LaMPDataError, load_golds, load_questions, load_split, write_examples
from tagpr.data.synthetic import generate

GOOD_Q = [{"id": "1", "input": "Paraphrase the following tweet: hi", "profile": [{"text": "a"}, {"text": "b"}]}]


def write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def err(tmp_path, name, obj, loader=load_questions, task="LaMP-7"):
    with pytest.raises(LaMPDataError) as e:
        loader(write(tmp_path, name, obj), task)
    return e.value


def test_good_files_and_both_golds_shapes(tmp_path):
    ex = load_questions(write(tmp_path, "q.json", GOOD_Q), "LaMP_7")
    assert ex[0].id == "1" and len(ex[0].profile) == 2 and ex[0].user_id is None
    g1 = load_golds(write(tmp_path, "o1.json", {"task": "LaMP_7", "golds": [{"id": "1", "output": "x"}]}), "LaMP-7")
    g2 = load_golds(write(tmp_path, "o2.json", [{"id": 1, "output": "x"}]), "LaMP-7")
    assert g1 == g2 == {"1": "x"}


def test_time_based_fields_are_kept(tmp_path):
    q = [{"id": "7", "user_id": "u3", "input": "x: y", "profile": [{"text": "a", "date": "2019-01-02", "id": "9"}]}]
    ex = load_questions(write(tmp_path, "q.json", q), "LaMP-7")[0]
    assert ex.user_id == "u3" and ex.profile[0]["date"] == "2019-01-02"


def test_missing_field_names_file_id_and_field(tmp_path):
    e = err(tmp_path, "q.json", [{"id": "42", "profile": [{"text": "a"}]}])
    assert e.example_id == "42" and e.field == "input"
    assert "q.json" in str(e) and "42" in str(e) and "input" in str(e)


def test_missing_profile_item_field(tmp_path):
    e = err(tmp_path, "q.json", [{"id": "5", "input": "x", "profile": [{"score": "3"}]}], task="LaMP-3")
    assert e.field == "profile[0].text" and e.example_id == "5"


def test_wrong_types(tmp_path):
    assert err(tmp_path, "a.json", [{"id": "5", "input": 3, "profile": [{"text": "a"}]}]).field == "input"
    assert err(tmp_path, "b.json", [{"id": "5", "input": "x", "profile": "abc"}]).field == "profile"
    assert err(tmp_path, "c.json", [{"id": ["5"], "input": "x", "profile": [{"text": "a"}]}]).field == "id"
    assert err(tmp_path, "d.json", [{"id": "5", "input": "x", "profile": [{"text": None}]}]).field == "profile[0].text"
    assert "list" in str(err(tmp_path, "e.json", {"id": "5"}))


def test_empty_profile(tmp_path):
    e = err(tmp_path, "q.json", [{"id": "8", "input": "x", "profile": []}])
    assert e.field == "profile" and "empty profile" in str(e)


def test_not_json_and_html_page(tmp_path):
    assert "not valid JSON" in str(err(tmp_path, "q.json", '[{"id": "1",'))
    e = err(tmp_path, "q.json", "<!DOCTYPE html><html><body>Not Found</body></html>")
    assert "HTML page" in str(e)
    assert "file not found" in str(pytest.raises(LaMPDataError, load_questions, tmp_path / "nope.json").value)


def test_golds_errors(tmp_path):
    assert err(tmp_path, "o.json", {"task": "LaMP_7", "golds": [{"id": "1"}]}, load_golds).field == "output"
    assert err(tmp_path, "o.json", {"task": "LaMP_3", "golds": []}, load_golds).field == "task"
    assert err(tmp_path, "o.json", {"task": "LaMP_7"}, load_golds).field == "golds"


def test_id_mismatch_between_questions_and_golds(tmp_path):
    d = tmp_path / "LaMP_7"
    d.mkdir()
    write(d, "dev_questions.json", GOOD_Q)
    write(d, "dev_outputs.json", {"task": "LaMP_7", "golds": [{"id": "2", "output": "x"}]})
    with pytest.raises(LaMPDataError) as e:
        load_split(tmp_path, "LaMP-7", "dev")
    assert e.value.example_id == "1" and e.value.field == "id" and "dev_outputs.json" in str(e.value)
    write(d, "dev_outputs.json", {"task": "LaMP_7", "golds": [{"id": "1", "output": "x"}, {"id": "3", "output": "y"}]})
    with pytest.raises(LaMPDataError) as e:
        load_split(tmp_path, "LaMP-7", "dev")
    assert e.value.example_id == "3"


def test_duplicate_ids(tmp_path):
    assert err(tmp_path, "q.json", GOOD_Q + GOOD_Q).field == "id"


def test_roundtrip_synthetic(tmp_path):
    exs = generate("LaMP-3", 5, seed=3)
    write_examples(exs, tmp_path / "LaMP_3", "LaMP-3", "dev")
    back = load_split(tmp_path, "LaMP-3", "dev", require_golds=True)
    assert [e.id for e in back] == [e.id for e in exs] and [e.gold for e in back] == [e.gold for e in exs]


def test_missing_split_says_where_it_looked(tmp_path):
    with pytest.raises(LaMPDataError) as e:
        load_split(tmp_path, "LaMP-7", "dev")
    assert "looked in" in str(e.value)


def test_shared_lamp7_loads(shared_lamp7):
    exs = load_split(shared_lamp7.parent, "LaMP-7", "dev", require_golds=True)
    assert len(exs) == 989 and all(e.gold for e in exs)
