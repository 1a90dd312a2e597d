"""Task registry (names, official queries, documents) and the official prompt construction."""

import pytest

from tagpr.prompts import WhitespaceTokenizer, build_rag_prompt
from tagpr.tasks import TASKS, get_task

LAMP1_INPUT = ('For an author who has written the paper with the title "Algorithms for routing", which reference is '
               'related? Just answer with [1] or [2] without explanation. [1]: "Reliable broadcasting" [2]: "Auctions with budgets"')


@pytest.mark.parametrize("alias,name", [("LaMP_7", "LaMP-7"), ("LaMP-7", "LaMP-7"), ("lamp7", "LaMP-7"),
                                        ("LaMP_2", "LaMP-2"), ("LaMP-2M", "LaMP-2"), ("LaMP_2N", "LaMP-2N")])
def test_aliases(alias, name):
    assert get_task(alias).name == name


def test_unknown_task():
    with pytest.raises(KeyError, match="unknown task"):
        get_task("LaMP-9")


def test_eight_tasks_defined_once():
    assert list(TASKS) == ["LaMP-1", "LaMP-2", "LaMP-2N", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-6", "LaMP-7"]


def test_official_queries():
    assert get_task("LaMP-1").retrieval_query(LAMP1_INPUT) == "Reliable broadcasting Auctions with budgets"
    assert get_task("LaMP-2").retrieval_query("tags: [a, b] description: A robot film.") == "A robot film."
    assert get_task("LaMP-3").retrieval_query("scale of 1 to 5? review: Great kettle") == "Great kettle"
    assert get_task("LaMP-4").retrieval_query("Generate a headline for the following article: Rates rise") == "Rates rise"
    assert get_task("LaMP-5").retrieval_query("Generate a title for the following abstract of a paper: We show") == "We show"
    assert get_task("LaMP-7").retrieval_query("Paraphrase the following tweet: a: b") == "a: b"


def test_documents():
    assert get_task("LaMP-4").document({"title": "T", "text": "body"}) == "T body"
    assert get_task("LaMP-1").document({"title": "T", "abstract": "A", "id": "1"}) == "T A"


def test_lamp3_prompt_official_strings():
    items = [{"text": "great kettle", "score": "5"}, {"text": "broke fast", "score": "1"}]
    p = build_rag_prompt("LaMP-3", "What is the score? review: ok kettle", items, WhitespaceTokenizer())
    assert p == '5 is the score for "great kettle" , and 1 is the score for "broke fast" . What is the score? review: ok kettle'


def test_lamp7_and_lamp1_compositions():
    p = build_rag_prompt("LaMP-7", "Paraphrase the following tweet: hi", [{"text": "yo"}], WhitespaceTokenizer())
    assert p == '"yo"  are written by a person. Following the given patterns Paraphrase the following tweet: hi'
    p = build_rag_prompt("LaMP-1", LAMP1_INPUT, [{"title": "Graph drawing", "abstract": "x"}], WhitespaceTokenizer())
    assert p.startswith('For an author who has written the paper with the title, and "Graph drawing" "Algorithms')


def test_budget_truncates_items_and_carries_savings():
    tok = WhitespaceTokenizer()
    long_text = " ".join(f"w{i}" for i in range(500))
    items = [{"text": "short one", "score": "4"}, {"text": long_text, "score": "2"}]
    p = build_rag_prompt("LaMP-3", "review: fine", items, tok, max_length=100)
    # input (2 words) reserved; 98 left; overhead 2*(2-1)+1 = 3 -> 47 per item;
    # template '4 is the score for " " ' = 7 whitespace tokens (the quotes split);
    # item 1 uses 2 words -> saves 47-7-2 = 38; item 2 gets 47+38-7 = 78 words of text
    second = p.split(", and ")[1]
    assert second.startswith('2 is the score for "w0 ') and "w77" in second and "w78" not in second
    assert len(tok.encode(p)) <= 100 + 2


def test_budget_too_small_falls_back_to_input():
    items = [{"text": "a b c", "score": "4"}] * 3
    assert build_rag_prompt("LaMP-3", "review: fine", items, WhitespaceTokenizer(), max_length=5) == "review: fine"


def test_hf_tokenizer_budget(embedded_backend):
    tok = embedded_backend.tokenizer
    items = [{"text": "word " * 400}] * 4
    p = build_rag_prompt("LaMP-7", "Paraphrase the following tweet: " + "x " * 50, items, tok, max_length=512)
    assert len(tok.encode(p, add_special_tokens=False)) <= 512 + 8


def test_tagpr_prompt_cuts_long_inputs_and_items_the_same_way_for_every_stage():
    from tagpr.prompts import TAGPR_INPUT_CHARS, TAGPR_ITEM_CHARS, TAGPR_ITEM_WORDS, build_tagpr_messages

    review = "great value " * 400  # 4,800 characters
    items = [{"text": "word " * 100, "score": "4"}]
    user = build_tagpr_messages("LaMP-3", review, items, style="compact")[1]["content"]
    task_line = user.split("Task: ", 1)[1]
    assert task_line.endswith(" ...") and len(task_line) <= TAGPR_INPUT_CHARS + 4
    assert task_line.startswith("great value great value")
    item_line = next(x for x in user.splitlines() if x.startswith("[1]"))
    assert item_line.startswith('[1] 4 is the score for "word') and item_line.endswith(' ..."')
    assert item_line.count("word") == TAGPR_ITEM_WORDS
    html = [{"text": '<div id="video-block-R1U7N664D2UYWJ" class="a-section">' * 8 + " Good.", "score": "5"}]
    line = next(x for x in build_tagpr_messages("LaMP-3", "x", html)[1]["content"].splitlines() if x.startswith("[1]"))
    assert len(line) <= len('[1] 5 is the score for "') + TAGPR_ITEM_CHARS + len(' ..."')  # few words, many characters
    movie = [{"description": "a long plot " * 40, "tag": "comedy"}]  # the tag comes after the cut description
    line = next(x for x in build_tagpr_messages("LaMP-2", "x", movie)[1]["content"].splitlines() if x.startswith("[1]"))
    assert line.endswith('... " is "comedy"') or line.endswith('..." is "comedy"'), line
    short = build_tagpr_messages("LaMP-3", "good phone", items)[1]["content"]
    assert short.endswith("Task: good phone")
