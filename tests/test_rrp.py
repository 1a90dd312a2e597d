"""RRP: the template, each intervention rule driven by a scripted model, and cross-referencing."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagpr.generation import Generation, SamplingParams
from tagpr.rrp import (
    SECTIONS, InterventionController, build_rrp_prompt, check_template, combine, extract_answer, find_repetition,
    mbr, median, parse_budgets, reconcile, vote,
)
from tagpr.tasks import get_task

H = [s.header for s in SECTIONS]
IDEAL = f"{H[0]}\nPick one tag.\n{H[1]}\nThey tag comedies [1] [2].\n{H[2]}\nA comedy again.\n{H[3]}\ncomedy"


class ScriptedModel:
    """A fake backend: ``script(partial_turn)`` is what the model would write next; words are tokens.

    It honours ``max_new_tokens`` and stop strings like a real backend (the stop string is cut and
    reported in ``stop_reason``), and ends with end-of-sequence when the script's text runs out."""

    name = "scripted"
    tokenizer = None

    def __init__(self, script):
        self.script = script
        self.calls = []

    def continue_generation(self, requests, params):
        out = []
        for prompt, partial in requests:
            self.calls.append((partial, params))
            pieces = re.findall(r"\s*\S+|\s+$", self.script(partial))
            text, n, gen = "", 0, None
            for piece in pieces:
                if n == params.max_new_tokens:
                    gen = Generation(text, 10, n, "length")
                    break
                text += piece
                n += 1
                hits = [(text.find(s), s) for s in params.stop if s and s in text]
                if hits:
                    i, s = min(hits)
                    gen = Generation(text[:i], 10, n, "stop", s)
                    break
            out.append([gen or Generation(text, 10, n, "stop")])
        return out

    def generate(self, prompts, params):
        return self.continue_generation([(p, "") for p in prompts], params)


def follow(ideal):
    """A script that continues ``ideal`` from wherever the turn stands (after injections too)."""
    def script(partial):
        for h in reversed(H):
            if partial.rstrip().endswith(h) or partial.endswith(h + "\n"):
                return ideal[ideal.index(h) + len(h) + 1 :]
        return ideal[len(partial):] if ideal.startswith(partial) else ""
    return script


def run(script, task="LaMP-2", **kw):
    model = ScriptedModel(script)
    ctl = InterventionController(model, task, budgets=kw.pop("budgets", "40,64,48,16"), **kw)
    gen = ctl.run(["prompt"], SamplingParams())[0][0]
    return gen, model


def rules(gen):
    return [(iv.rule, iv.section) for iv in gen.interventions]


def test_a_model_that_follows_the_template_needs_no_intervention():
    gen, model = run(follow(IDEAL))
    assert rules(gen) == []
    assert gen.text == IDEAL and gen.answer == "comedy"
    assert len(model.calls) == 4  # one call per section; the model moved to each header itself
    assert check_template(gen.text, "LaMP-2").adherent


def test_skip_rule_injects_the_expected_header():
    def script(partial):
        if partial.endswith(H[0] + "\n"):
            return f"Pick one tag.\n{H[2]}\nA comedy."  # jumps from section 1 to section 3
        return follow(IDEAL)(partial)

    gen, _ = run(script)
    assert rules(gen) == [("skip", "task")]
    assert gen.text == IDEAL and check_template(gen.text, "LaMP-2").adherent


def test_reorder_rule_when_the_model_goes_back():
    def script(partial):
        if partial.endswith(H[1] + "\n"):
            return f"They tag comedies [1].\n{H[0]}\nAgain the task."  # reopens section 1
        return follow(IDEAL)(partial)

    gen, _ = run(script)
    assert rules(gen) == [("reorder", "profile")]
    assert gen.text.count("### 1.") == 1 and check_template(gen.text, "LaMP-2").in_order


def test_early_end_rule_resumes_with_the_next_header():
    def script(partial):
        if partial.endswith(H[1] + "\n"):
            return "They tag comedies."  # then end of sequence
        return follow(IDEAL)(partial)

    gen, model = run(script)
    assert rules(gen) == [("early_end", "profile")]
    assert f"They tag comedies.\n{H[2]}\n" in gen.text and gen.answer == "comedy"


def test_overrun_rule_cuts_a_section_at_its_budget():
    long = " ".join(f"w{i}" for i in range(200))

    def script(partial):
        if partial.endswith(H[1] + "\n"):
            return long + f"\n{H[2]}\nx"
        if H[1] in partial and H[2] not in partial:  # resumed mid-section by the next chunk
            body = partial.split(H[1] + "\n")[1]
            return long[len(body):] + f"\n{H[2]}\nx"
        return follow(IDEAL)(partial)

    gen, model = run(script, budgets="40,50,48,16", chunk_tokens=32)
    assert rules(gen) == [("overrun", "profile")]
    body = gen.text.split(H[1] + "\n")[1].split(H[2])[0]
    assert len(body.split()) == 50  # two chunks: 32 + 18 tokens, the section's budget
    assert [c[1].max_new_tokens for c in model.calls[1:3]] == [32, 18]


def test_repetition_rule_cuts_where_the_loop_starts():
    loop = "I like this kind of film a lot. " * 6

    def script(partial):
        if partial.endswith(H[2] + "\n"):
            return loop
        return follow(IDEAL)(partial)

    gen, _ = run(script, budgets="40,64,200,16", chunk_tokens=200)
    assert rules(gen) == [("repetition", "response")]
    body = gen.text.split(H[2] + "\n")[1].split(H[3])[0]
    assert body.strip() == "I like this kind of film a lot."
    assert gen.answer == "comedy"


def test_repeated_short_line_counts_as_repetition():
    assert find_repetition("- comedy\n- romance\n- comedy\n- comedy\nmore", ngram=8) == len("- comedy\n- romance\n- comedy\n")
    assert find_repetition("a b c d e f g h i j k l m n o p", ngram=8) is None


def test_format_rule_injects_a_note_once_then_accepts():
    answers = iter(["I think it is great", "comedy"])

    def script(partial):
        if partial.endswith(H[3] + "\n"):
            return next(answers)
        return follow(IDEAL)(partial)

    gen, _ = run(script)
    assert rules(gen) == [("format", "answer")]
    assert gen.answer == "comedy"
    note = get_task("LaMP-2").answers.correction_note()
    assert f"{note}\n{H[3]}\ncomedy" in gen.text and gen.text.count(H[3]) == 1
    assert check_template(gen.text, "LaMP-2").adherent  # the note sits before the answer header


def test_format_rule_gives_up_after_max_corrections():
    def script(partial):
        if partial.endswith(H[3] + "\n"):
            return "no idea"
        return follow(IDEAL)(partial)

    gen, _ = run(script)
    assert rules(gen) == [("format", "answer")]
    assert gen.answer == "no idea" and not check_template(gen.text, "LaMP-2").adherent


def test_think_mode_closes_the_think_block_before_the_answer():
    ideal = "<think>\n" + IDEAL.replace(H[3], "</think>\n" + H[3])

    def script(partial):
        if partial.endswith(H[1] + "\n"):
            return "They like comedies.</think>\ncomedy"  # closes thinking too early
        return follow(ideal)(partial)

    gen, _ = run(script, think=True)
    assert rules(gen) == [("early_end", "profile")]
    assert gen.text.startswith("<think>\n" + H[0]) and gen.text.count("</think>") == 1
    assert gen.text.index("</think>") < gen.text.index(H[3]) and gen.answer == "comedy"


def test_without_intervention_the_text_is_taken_as_is():
    model = ScriptedModel(lambda partial: f"{H[0]}\nx\n{H[2]}\nA comedy.\n{H[3]}\ncomedy")
    gen = InterventionController(model, "LaMP-2", intervene=False).run(["p"], SamplingParams())[0][0]
    chk = check_template(gen.text, "LaMP-2")
    assert gen.interventions == [] and gen.answer == "comedy"
    assert chk.sections == ["task", "response", "answer"] and not chk.in_order and not chk.adherent
    assert model.calls[0][1].max_new_tokens == sum(parse_budgets(None, "LaMP-2"))


def test_states_are_batched_per_call_and_candidates_expand():
    model = ScriptedModel(follow(IDEAL))
    ctl = InterventionController(model, "LaMP-2", budgets="40,64,48,16")
    out = ctl.run(["a", "b", "c"], SamplingParams(n=2, temperature=0.7, seed=1))
    assert [len(row) for row in out] == [2, 2, 2]
    assert all(g.answer == "comedy" and not g.interventions for row in out for g in row)
    assert len(model.calls) == 4 * 6  # 6 turns x 4 sections, sent as 4 batched rounds


def test_rating_and_generation_answers():
    ideal3 = IDEAL.replace("comedy", "4").replace("\ncomedy", "\n4")
    gen, _ = run(follow(ideal3[: ideal3.rindex("\n") + 1] + "4 stars"), task="LaMP-3", budgets="40,64,48,8")
    assert gen.answer == "4" and not gen.interventions
    ideal7 = IDEAL[: IDEAL.index(H[3])] + H[3] + "\nMy tweet here!\n\nAnd then rambling on"
    gen, model = run(follow(ideal7), task="LaMP-7", budgets="40,64,48,48")
    assert gen.answer == "My tweet here!" and not gen.interventions  # the answer stops at a blank line


def test_template_prompt_lists_sections_items_and_input():
    p = build_rrp_prompt("LaMP-3", "review: good stuff", [{"text": "meh", "score": "2"}])
    assert all(h in p for h in H) and "[1] 2 is the score for \"meh\"" in p and p.endswith("Task: review: good stuff")


def test_budgets_are_checked():
    assert parse_budgets("1,2,3,4", "LaMP-7") == (1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "1,2,0,4"):
        with pytest.raises(ValueError, match="budgets"):
            parse_budgets(bad, "LaMP-7")


def test_aggregates():
    assert vote(["romance", "comedy", "comedy", "junk", "romance", "comedy"], "LaMP-2") == "comedy"
    assert vote(["junk", "romance", "comedy"], "LaMP-2") == "romance"  # tie -> earliest valid
    assert median(["5", "1", "4", "x", "4"], "LaMP-3") == "4"
    assert median(["2", "3"], "LaMP-3") == "3"  # 2.5 rounds half up
    assert mbr(["the cat sat", "a cat sat down", "stock prices fell"], "LaMP-7") == "the cat sat"
    assert combine(["romance", "comedy", "comedy"], "LaMP-2", "auto") == "comedy"
    assert combine(["1", "5", "2"], "LaMP-3", "auto") == "2"


def test_reconcile_falls_back_to_mbr_on_an_invalid_answer():
    model = ScriptedModel(lambda partial: "comedy")
    answers, tokens = reconcile(model, "LaMP-2", ["x"], [None], [["romance", "comedy", "romance"]])
    assert answers == ["comedy"] and tokens == 1
    junk = ScriptedModel(lambda partial: "whatever")
    assert reconcile(junk, "LaMP-2", ["x"], [None], [["romance", "comedy", "romance"]])[0] == ["romance"]


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("#123456789. \n</>thinkabc")) | st.characters(), max_size=400),
       answers=st.lists(st.text(max_size=30), max_size=6))
def test_untrusted_text_never_raises(text, answers):
    for task in ("LaMP-2", "LaMP-3", "LaMP-7"):
        check_template(text, task)
        extract_answer(text, task)
        for how in ("vote", "median", "mbr"):
            combine(answers, task, how)
    find_repetition(text, ngram=2)


class ScoringModel(ScriptedModel):
    """A scripted model that can also score options (as the transformers backend does)."""

    def __init__(self, script, prefer):
        super().__init__(script)
        self.prefer = prefer
        self.scored = []

    def option_logprobs(self, requests, options):
        self.scored.append(requests[0][1])
        return [[0.0 if o == self.prefer else -5.0 for o in options] for _ in requests]


def test_format_rule_constrains_closed_answers_when_the_backend_scores_options():
    def script(partial):
        if partial.endswith(H[3] + "\n"):
            return "The user's answer is: [6]"
        return follow(IDEAL)(partial)

    model = ScoringModel(script, prefer="romance")
    gen = InterventionController(model, "LaMP-2", budgets="40,64,48,16").run(["p"], SamplingParams())[0][0]
    assert rules(gen) == [("format", "answer")] and gen.answer == "romance"
    assert model.scored[0].endswith(H[3] + "\n")  # scored right after the answer header, with the reasoning
    assert gen.text.endswith(H[3] + "\nromance") and check_template(gen.text, "LaMP-2").adherent
    # a valid answer is left alone; free-text tasks are never constrained
    model = ScoringModel(follow(IDEAL), prefer="romance")
    assert InterventionController(model, "LaMP-2").run(["p"], SamplingParams())[0][0].answer == "comedy"
    assert InterventionController(ScoringModel(follow(IDEAL), "x"), "LaMP-7").options is None
