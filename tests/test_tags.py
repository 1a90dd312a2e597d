"""The tag grammar: parser, validator and R_tag (never raises; broken chains rank below kept ones)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tagpr.cli import app
from tagpr.tags import TAGS, check_chain, parse_chain, tag_reward

GOOD = """<think>
<understand_task>Pick one tag from the list.</understand_task>
<examine_history>Items [1] and [3] are action movies the user tagged "action".</examine_history>
<identify_patterns>Most of the user's tags are action.</identify_patterns>
<conclude>action</conclude>
</think>
<answer>action</answer>"""


def test_good_chain():
    c = check_chain(GOOD, "LaMP-2", num_items=4)
    assert c.valid and c.reward == 1.0 and c.answer == "action" and c.errors == []
    assert [s.tag for s in c.steps] == ["understand_task", "examine_history", "identify_patterns", "conclude"]
    assert c.steps[1].citations == [1, 3]


def test_invalid_citation_and_answer_lower_reward_but_stay_above_broken():
    c = check_chain(GOOD, "LaMP-2", num_items=2)  # [3] was not shown
    assert not c.valid and any("not shown" in e for e in c.errors) and c.reward == 0.5 + 0.25 * 0.5 + 0.25
    c = check_chain(GOOD.replace("<answer>action</answer>", "<answer>maybe</answer>"), "LaMP-2", 4)
    assert c.reward == 0.75 and "answer not parsable" in c.errors[-1]


def test_grammar_errors():
    cases = {
        "unknown tag": GOOD.replace("identify_patterns>", "guess>"),
        "nested": GOOD.replace("<conclude>action</conclude>", "<conclude><verify>x</verify></conclude>"),
        "after </answer>": GOOD + " and more",
        "unclosed": GOOD.replace("</examine_history>", ""),
        "empty <verify>": GOOD.replace("<conclude>", "<verify> </verify><conclude>"),
        "first step": GOOD.replace("<understand_task>Pick one tag from the list.</understand_task>", ""),
        "no <examine_history>": GOOD.replace("examine_history", "analyze_query"),
        "no <answer>": GOOD.replace("<answer>action</answer>", ""),
    }
    for what, text in cases.items():
        c = check_chain(text, "LaMP-2", 4)
        assert not c.valid and c.reward < 0.5, what
        assert any(what.split()[0].strip("<>/") in e for e in c.errors), (what, c.errors)


def test_tag_set():
    assert len(TAGS) == 9 and list(TAGS)[0] == "understand_task" and list(TAGS)[-1] == "conclude"


chunks = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<conclude>", "</conclude>",
                          "<examine_history>", "</examine_history>", "[1]", "[99]", "<bogus>", "</", "<", ">",
                          "action", "<understand_task>", "</understand_task>", "\n", "<infer_preference>"] )


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(chunks, st.text(max_size=20)), max_size=40), n=st.integers(-3, 50))
def test_never_raises_and_broken_ranks_below_kept(parts, n):
    text = "".join(parts)
    parse_chain(text)
    for task in ("LaMP-2", "LaMP-3", "LaMP-7", "LaMP-1"):
        c = check_chain(text, task, n)
        assert 0.0 <= c.reward <= 1.0
        grammar_kept = c.reward >= 0.5
        assert grammar_kept == (parse_chain(text).well_formed and not any(
            e.startswith(("first step", "last step", "no <examine", "no <identify")) for e in c.errors))


def test_huge_and_odd_inputs():
    for x in [None, 123, "<" * 100_000, GOOD * 2000, "<think>" * 5000, "\x00<answer>"]:
        assert 0.0 <= tag_reward(x, "LaMP-7", 3) <= 1.0


def test_cli_tags_check(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": GOOD, "num_items": 4}) + "\n" + json.dumps({"text": "nope", "num_items": 1}) + "\n")
    r = CliRunner().invoke(app, ["tags", "check", "--task", "LaMP-2", str(f)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[0]["valid"] and rows[0]["reward"] == 1.0 and rows[0]["answer"] == "action"
    assert not rows[1]["valid"] and rows[1]["reward"] < 0.5 and rows[1]["errors"]


def test_answer_cut_by_the_generation_limit_is_still_the_answer():
    """An output cut inside <answer> (the token limit) gives the text it has; the grammar error stays, so
    R_tag still ranks it below a closed chain."""
    cut = GOOD.replace("<answer>action</answer>", "<answer>@humanzz, one of your best tweets. lollllll")
    c = check_chain(cut, "LaMP-7", 4)
    assert c.answer == "@humanzz, one of your best tweets. lollllll"
    assert "unclosed <answer>" in c.errors and not c.valid and c.reward < 0.5
    from tagpr.tags import final_answer
    assert final_answer(cut, "LaMP-7") == "@humanzz, one of your best tweets. lollllll"
    # without <answer>: what follows </think>; a chain cut inside its reasoning answers nothing
    assert final_answer(cut.replace("<answer>", ""), "LaMP-7") == "@humanzz, one of your best tweets. lollllll"
    assert final_answer(cut[:cut.index("</think>")], "LaMP-7") == ""
    # an opening tag whose ">" was dropped (seen on real LaMP-7): the text up to </answer> (or the end) is the answer
    for loose in ("<answer Nicole, I miss you.</answer>", "<answer\nNicole, I miss you.</answer>",
                  "<answer: Nicole, I miss you.", "<answer Nicole, I miss you."):
        c = check_chain(GOOD.replace("<answer>action</answer>", loose), "LaMP-7", 4)
        assert c.answer == "Nicole, I miss you." and "malformed <answer> tag" in c.errors and not c.valid, loose
    for not_answer in ("<answers>x</answers>", "<answerx</answer>", "<answer </answer>"):
        assert check_chain(GOOD.replace("<answer>action</answer>", not_answer), "LaMP-7", 4).answer is None
    # a closed answer is unchanged, and nothing after an unclosed step tag counts as an answer
    assert check_chain(GOOD, "LaMP-2", 4).answer == "action"
    assert parse_chain("<think><conclude>action").answer is None


def test_a_chain_cut_in_its_reasoning_earns_no_task_reward():
    """A rating chain cut by the token limit inside <think> names scores of the shown reviews; none of them is its
    answer (before, the whole text was parsed and "[1] 4" earned reward).  Text that is not a chain (a baseline's)
    is still parsed whole, and an answered chain is unchanged."""
    from tagpr.tags import final_answer
    from tagpr.training.rewards import TaskReward

    chain = ("<think>\n<understand_task>Give the 1-5 score.</understand_task>\n<examine_history>Shown scores: [1] 4; "
             "[2] 5.</examine_history>\n<identify_patterns>[1] is the review most like this one; it got 4."
             "</identify_patterns>\n<conclude>The score is 4.</conclude>\n</think>\n<answer>4</answer>")
    cut = chain[:chain.index("[2]")]
    reward = TaskReward("LaMP-3")
    assert reward([chain, cut, "4", chain.replace("<answer>4</answer>", "4")], gold=["4"] * 4) == [1.0, 0.0, 1.0, 1.0]
    assert not final_answer(cut, "LaMP-3") and not final_answer(cut, "LaMP-3", check_chain(cut, "LaMP-3", 2))
    assert final_answer("It is a 4.", "LaMP-3") == "4" and not final_answer("It is a 4. <think> and then", "LaMP-3")


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_final_answer_never_raises(text):
    from tagpr.tags import final_answer

    for task in ("LaMP-2", "LaMP-3", "LaMP-7"):
        final_answer(text, task)
        final_answer("<think>" + text, task)
