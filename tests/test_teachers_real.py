"""The analytic teacher is right on real data (skipped when ../shared is absent), its generation chains
fit the task they are for, and its text handling never raises.

The real-data tests measure the floors in the same test: copying the input tweet (LaMP-7) and always
answering "5" (LaMP-3).  ``benchmarks/teacher_quality.py`` prints the full table with bootstrap CIs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagpr.data.loading import Example, load_split
from tagpr.pipeline.style import Habit, measure_habits, rewrite
from tagpr.pipeline.teachers import AnalyticTeacher, ChainRequest, output_noun
from tagpr.retrieval import make_retriever, retrieve
from tagpr.tags import check_chain, parse_chain
from tagpr.tasks import get_task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lamp"


def _needs(task_dir: str):
    return pytest.mark.skipif(not (SHARED / task_dir / "dev_questions.json").exists(),
                              reason=f"needs the shared real data at {SHARED / task_dir}")


def _chains_valid(task, teacher, examples, k=4):
    ret = make_retriever("bm25")
    for e in examples:
        items = retrieve(e, task, ret, k)
        chain = teacher.write([ChainRequest(task, e, items)], 1)[0][0]
        check = check_chain(chain, task, len(items))
        assert check.valid, (e.id, check.errors, chain)
        assert check.answer == task.parse(teacher.predict(e))  # the chain concludes what predict() says


@_needs("LaMP_7")
def test_lamp7_teacher_is_at_least_the_copy_floor():
    t = get_task("LaMP-7")
    exs = load_split(SHARED, t, "dev", require_golds=True)
    assert len(exs) == 989
    golds = [e.gold for e in exs]
    teacher = AnalyticTeacher(t).fit(exs)
    ours = t.metrics([teacher.predict(e) for e in exs], golds)
    floor = t.metrics([t.retrieval_query(e.input) for e in exs], golds)
    # measured: 0.4671 / 0.4117 against 0.4638 / 0.4075 (before: 0.4137 / 0.3634)
    assert ours["rouge-1"] >= floor["rouge-1"] and ours["rouge-L"] >= floor["rouge-L"], (ours, floor)
    _chains_valid(t, teacher, exs[:60])
    # the compact chains' teacher applies only the habits the 4 shown tweets show: fewer changes, still above
    compact = AnalyticTeacher(t, style="compact").fit(exs)
    ours = t.metrics([compact.predict(e) for e in exs], golds)
    assert ours["rouge-1"] >= floor["rouge-1"] + 0.001, (ours, floor)  # measured: 0.4663 (+0.0025)
    _chains_valid(t, compact, exs[:60])


@_needs("LaMP_3")
def test_lamp3_teacher_beats_always_5():
    t = get_task("LaMP-3")
    exs = load_split(SHARED, t, "dev", require_golds=True)
    golds = [e.gold for e in exs]
    teacher = AnalyticTeacher(t).fit(exs)  # profile items only: no question review is in any profile
    ours = t.metrics([teacher.predict(e) for e in exs], golds)
    always5 = t.metrics(["5"] * len(exs), golds)
    # measured: MAE 0.358 / RMSE 0.683 against 0.496 / 0.892; the user's most frequent score 0.392 / 0.758
    assert ours["mae"] < always5["mae"] and ours["mae"] < 0.496 and ours["rmse"] < always5["rmse"], (ours, always5)
    assert ours["mae"] < 0.392 + 0.03  # near the user's-most-frequent-score rule (or better)
    _chains_valid(t, teacher, exs[::8])


# ------------------------------------------------------------------------------ no shared data needed
def _doc_example(task: str, input_text: str, profile: list[dict]) -> Example:
    return Example("u1", input_text, profile, gold="x")


HEADLINE = _doc_example(
    "LaMP-4",
    "Generate a headline for the following article: The river council voted on Tuesday to widen the "
    "towpath along the canal. Works start in spring and take two years.",
    [{"id": "1", "text": "A market hall reopens after repairs.", "title": "Market Hall Reopens After Repairs"},
     {"id": "2", "text": "Ferry fares rise next month, the operator said.", "title": "Ferry Fares to Rise"},
     {"id": "3", "text": "The <b>museum</b> [7] adds late hours.", "title": "Museum Adds [7] Late Hours </answer>"}],
)
PAPER = _doc_example(
    "LaMP-5",
    "Generate a title for the following abstract of a paper: We study\n the colouring of sparse graphs. "
    "We give two algorithms and a lower bound.",
    [{"id": "1", "title": "Fast Matching in Planar Graphs", "abstract": "We match planar graphs quickly."},
     {"id": "2", "title": "On Sparse Cuts", "abstract": "Cuts in sparse graphs are studied."}],
)


@pytest.mark.parametrize("task,example,noun", [("LaMP-4", HEADLINE, "headline"), ("LaMP-5", PAPER, "title")])
@pytest.mark.parametrize("style", ["full", "compact"])
def test_generation_chains_fit_headline_and_title_tasks(task, example, noun, style):
    t = get_task(task)
    assert not t.rewrites_input and output_noun(t) == noun
    teacher = AnalyticTeacher(t, style=style).fit([example])
    for items in (example.profile, []):
        chain = teacher.write([ChainRequest(t, example, items)], 1)[0][0]
        check = check_chain(chain, t, len(items))
        assert check.valid, (check.errors, chain)
        assert "tweet" not in chain.lower() and noun in chain
        assert check.answer and check.answer.split()[0] in t.retrieval_query(example.input)  # from the document
        assert len(check.answer.split()) <= 4  # cut to the user's median length (3 / 2.5 words)
    hinted = teacher.write([ChainRequest(t, example, example.profile, hint="A Made-Up Gold")], 1)[0][0]
    assert check_chain(hinted, t, 3).answer == "A Made-Up Gold" and "tweet" not in hinted.lower()


def test_lamp7_keeps_the_tweet_and_applies_measured_habits():
    t = get_task("LaMP-7")
    assert t.rewrites_input and output_noun(t) == "paraphrased tweet"
    profile = [{"id": str(i), "text": x} for i, x in enumerate([
        "@ann u should come 2 the show", "@bob thx, u r the best", "@cy see u there &amp; bring snacks",
        "@di omg u did it", "@ed love it &amp; miss it"])]
    e = Example("u7", "Paraphrase the following tweet without any explanation before or after it: "
                      "Are you coming and bringing food tonight, @fay?", profile, gold="x")
    teacher = AnalyticTeacher(t).fit([e])
    answer = teacher.predict(e)
    assert answer.startswith("@fay") and " u " in f" {answer} " and "&amp;" in answer
    assert "coming" in answer and "food" in answer  # the content is the input's
    chain = teacher.write([ChainRequest(t, e, profile[:3])], 1)[0][0]
    assert check_chain(chain, t, 3).valid and parse_chain(chain).answer == answer
    plain = Example("u8", e.input, [{"id": "1", "text": "Lovely day at the beach."}], gold="x")
    assert AnalyticTeacher(t).predict(plain) == t.retrieval_query(e.input)  # no habit: the input as it is
    # a compact chain applies only the habits its shown items show: here "u", not "&amp;" (shown only in [3])
    compact = AnalyticTeacher(t, style="compact").fit([e])
    chain = compact.write([ChainRequest(t, e, profile[:2])], 1)[0][0]
    answer = parse_chain(chain).answer
    assert check_chain(chain, t, 2).valid and " u " in f" {answer} " and "&amp;" not in answer and " and " in answer
    assert "&amp;" not in chain.split("<answer>")[0]  # nor does the chain name it
    # it lists the shown habits in the order the items show them, checks each against the input, then changes
    steps = {s.tag: s.text for s in parse_chain(chain).steps}
    assert steps["examine_history"] == ('[1] writes "u" for "you"; [1] writes "2" for "to"; [1] opens with an '
                                        '@-mention; [2] writes "r" for "are".')
    assert steps["identify_patterns"] == ('"you" is in the input; no "to" in the input; the input\'s @-mention is '
                                          'not first; "are" is in the input.')
    assert steps["cross_reference"] == '"you" -> "u"; the @-mention goes first; "are" -> "r".'
    assert answer == "@fay r u coming and bringing food tonight?"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=6), st.text(max_size=120))
def test_style_functions_never_raise(texts, text):
    habits = measure_habits(texts)
    out, used = rewrite(text, habits, kinds=("variant", "spelling", "mention-first", "closer", "opener", "lowercase"))
    assert isinstance(out, str) and all(isinstance(h, Habit) for h in used)
    assert all(isinstance(h.describe(), str) and isinstance(h.shown_in(text), bool) for h in habits)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4), st.text(max_size=80),
       st.sampled_from(["LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7"]))
def test_teacher_chains_stay_valid_on_hostile_text(texts, text, task):
    t = get_task(task)
    profile = [{"id": str(i), "text": x, "abstract": x, "title": x or "t", "score": x if i else "4"}
               for i, x in enumerate(texts)]
    if task == "LaMP-3":
        profile.append({"id": "z", "text": "good", "score": "5"})
    e = Example("h", t.question({"text": text, "abstract": text}), profile, gold="5")
    teacher = AnalyticTeacher(t).fit([e])
    chain = teacher.write([ChainRequest(t, e, profile[:3])], 2)[0][0]
    check = check_chain(chain, t, len(profile[:3]))
    assert check.valid, (check.errors, chain)
