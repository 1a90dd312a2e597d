"""Model output is untrusted: parsers and rewards never raise, rewards stay in [0, 1]."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tagpr.tasks import TASKS

texts = st.one_of(
    st.text(max_size=400),
    st.text(alphabet=st.sampled_from(list('[]12345.-+eE"\' \n<>/:abcnaif')), max_size=200),
    st.builds(lambda n: "9" * n, st.integers(0, 500)),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "", " ", "\x00", "[1", "1]", "5.", ".5", "--3"]),
)
golds = {"classification": None, "rating": st.sampled_from(["1", "2", "3", "4", "5"]), "generation": st.text(max_size=80)}


@settings(max_examples=150, deadline=None)
@given(text=texts, data=st.data())
def test_parse_and_reward_never_raise(text, data):
    for task in TASKS.values():
        answer = task.parse(text)
        assert isinstance(answer, str)
        gold = data.draw(st.sampled_from(task.labels)) if task.kind == "classification" else data.draw(golds[task.kind])
        r = task.reward(answer, gold)
        assert 0.0 <= r <= 1.0
        assert 0.0 <= task.reward(text, gold) <= 1.0
        task.is_valid_answer(answer)


@settings(max_examples=50, deadline=None)
@given(preds=st.lists(texts, min_size=1, max_size=5))
def test_metrics_accept_any_prediction(preds):
    for task in TASKS.values():
        gold = task.labels[0] if task.labels else "3"
        m = task.metrics(preds, [gold] * len(preds))
        assert all(v == v for v in m.values())  # no NaN


def test_huge_string_is_bounded():
    big = "word " * 200_000
    for task in TASKS.values():
        gold = task.labels[0] if task.labels else "3"
        assert 0.0 <= task.reward(task.parse(big), gold) <= 1.0


@settings(max_examples=150, deadline=None)
@given(text=texts, query=st.text(max_size=80), shown=st.lists(st.text(max_size=60), max_size=4))
def test_rewrite_chain_verifier_never_raises(text, query, shown):
    from tagpr.pipeline.teachers import verify_rewrite_chain

    chain = ("<think><examine_history>[1] writes \"" + text[:20] + "\" for \"" + query[:10] + "\"</examine_history>"
             "<identify_patterns>" + text + "</identify_patterns><cross_reference>" + text[::-1]
             + "</cross_reference></think><answer>" + text + "</answer>")
    for t in (text, chain):
        assert 0.0 <= verify_rewrite_chain(t, query, shown).score <= 1.0
