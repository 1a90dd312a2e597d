"""Parsers and official metrics pinned to hand-computed values."""

import math

import pytest

from tagpr import scoring
from tagpr.tasks import MOVIE_TAGS, get_task


def test_lamp1_answer_without_brackets_is_wrong():
    t = get_task("LaMP-1")
    # the parser does not invent brackets, and the metric looks labels up exactly
    assert t.parse("1") == "1"
    m = t.metrics(["[1]", "1", "[2]"], ["[1]", "[1]", "[2]"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    # class [1]: tp=1 fp=0 fn=1 -> 2/3 ; class [2]: tp=1 -> 1.0 ; macro = 5/6
    assert m["f1"] == pytest.approx(5 / 6)


def test_lamp1_parser_extracts_bracketed_label():
    t = get_task("LaMP-1")
    assert t.parse("The answer is [2].") == "[2]"
    assert t.parse(" [1] ") == "[1]"


def test_lamp2_label_lookup_is_exact_in_metric():
    t = get_task("LaMP-2")
    m = t.metrics(["Sci-Fi", "sci-fi "], ["sci-fi", "sci-fi"])
    assert m["accuracy"] == pytest.approx(0.5)  # case differs -> wrong; whitespace is stripped -> right


def test_macro_f1_counts_every_label_of_the_task():
    t = get_task("LaMP-2")
    m = t.metrics(["comedy"], ["comedy"])
    assert m["accuracy"] == 1.0
    assert m["f1"] == pytest.approx(1 / len(MOVIE_TAGS))  # 14 absent labels score 0, as sklearn's labels=range(15)


def test_lamp2_parser_prefers_longest_earliest_label():
    t = get_task("LaMP-2")
    assert t.parse("dark comedy") == "dark comedy"
    assert t.parse("I think it's Dark Comedy, not comedy") == "dark comedy"
    assert t.parse('"Romance"') == "romance"
    assert t.parse("no idea") == "no idea"


def test_lamp3_unparsable_scores_as_worst_of_1_or_5():
    t = get_task("LaMP-3")
    m = t.metrics(["4", "abc", "abc", "abc"], ["5", "2", "4", "3"])
    # errors: 1 | gold 2 -> 5 (3) | gold 4 -> 1 (3) | gold 3 -> tie -> 5 (2)
    assert m["mae"] == pytest.approx(9 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(23 / 4))


def test_lamp3_parser_and_nonfinite():
    assert scoring.parse_rating("Rating: 4/5") == "4"
    assert scoring.parse_rating("I'd say 3.5.") == "3.5"
    assert scoring.parse_rating("none") == "none"
    assert scoring.rating_value("nan", "2") == 5.0
    assert scoring.rating_value("inf", "5") == 1.0


def test_rouge_values_official_settings():
    t = get_task("LaMP-7")
    m = t.metrics(["the cat sat"], ["the cat sat on the mat"])
    assert m["rouge-1"] == pytest.approx(2 / 3)
    assert m["rouge-L"] == pytest.approx(2 / 3)
    m = t.metrics(["sat the cat"], ["the cat sat"])
    assert m["rouge-1"] == pytest.approx(1.0)
    assert m["rouge-L"] == pytest.approx(2 / 3)
    # no stemmer: "cats" != "cat"; default tokenizer lowercases and drops punctuation
    assert t.metrics(["Cats!"], ["cat"])["rouge-1"] == 0.0
    assert t.metrics(["CAT!"], ["cat"])["rouge-1"] == 1.0


def test_generation_parser_cleans_chatter():
    assert scoring.parse_generation('Here is the paraphrased tweet: "hello world"\nHope it helps') == "hello world"
    assert scoring.parse_generation("  just text  ") == "just text"
    assert scoring.parse_generation("\n\nTitle: Deep Nets\n") == "Deep Nets"


def test_task_rewards():
    assert get_task("LaMP-3").reward("4", "5") == pytest.approx(0.75)
    assert get_task("LaMP-3").reward("9", "5") == 0.0
    assert get_task("LaMP-3").reward("x", "5") == 0.0
    assert get_task("LaMP-1").reward("[1]", "[1]") == 1.0
    assert get_task("LaMP-1").reward("1", "1") == 0.0  # outside the label space
    assert get_task("LaMP-2").reward("comedy", "action") == 0.0
    assert get_task("LaMP-7").reward("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)


def test_metrics_length_mismatch_raises():
    with pytest.raises(ValueError):
        get_task("LaMP-7").metrics(["a"], ["a", "b"])


def test_generation_answer_drops_a_lead_in_line():
    assert scoring.parse_generation("The user's tweet would be:\nSo happy today!\nmore") == "So happy today!"
    assert scoring.parse_generation("Note: this is the tweet itself") == "Note: this is the tweet itself"
    assert scoring.parse_generation("only: line:") == "only: line:"
    assert scoring.parse_generation('[4] "so happy today!"') == "so happy today!"  # a cited item index is dropped
