"""TagPR's chain pipeline: teachers, rejection sampling, rationalization, labelling, resume, stats."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tagpr.cli import app
from tagpr.data.loading import write_examples
from tagpr.data.synthetic import generate_splits, profile_blind_rules
from tagpr.pipeline.chains import ChainBuilder, ChainsConfig, ChainsMismatchError
from tagpr.pipeline.labelling import LLMLabeller, enforce_coverage, split_free_text, tag_free_text
from tagpr.pipeline.teachers import AnalyticTeacher, ChainRequest, leaks_hint
from tagpr.retrieval import make_retriever
from tagpr.tags import check_chain
from tagpr.tasks import get_task


@pytest.fixture(scope="module")
def lamp2():
    return generate_splits("LaMP-2", 300, 150, seed=11)


@pytest.fixture(scope="module")
def lamp3():
    return generate_splits("LaMP-3", 200, 120, seed=12)


def _teacher_scores(task, splits):
    t = get_task(task)
    teacher = AnalyticTeacher(task).fit(splits["train"])
    ret = make_retriever("bm25")
    rewards, valid = [], 0
    for e in splits["dev"]:
        items = [e.profile[i] for i in ret.rank(e, t, 4)]
        chain = teacher.write([ChainRequest(t, e, items)], 1)[0][0]
        check = check_chain(chain, t, len(items))
        valid += check.valid
        rewards.append(t.reward(check.answer, e.gold))
    blind = max(sum(t.reward(rule(e), e.gold) for e in splits["dev"]) / len(splits["dev"])
                for rule in profile_blind_rules(task).values())
    return sum(rewards) / len(rewards), blind, valid / len(splits["dev"])


def test_analytic_teacher_reasons_from_the_profile(lamp2, lamp3):
    acc, blind, valid = _teacher_scores("LaMP-2", lamp2)
    assert valid == 1.0 and acc > blind + 0.15 and acc > 0.7  # measured: 0.85 vs 0.55
    r3, blind3, valid3 = _teacher_scores("LaMP-3", lamp3)
    assert valid3 == 1.0 and r3 > blind3 + 0.05 and r3 > 0.9  # reward 1-|d|/4; measured 0.95 vs 0.81
    # LaMP-7: the input with the user's measured habits (no generator table); reward (R-1 + R-L) / 2
    r7, blind7, valid7 = _teacher_scores("LaMP-7", generate_splits("LaMP-7", 100, 120, seed=13))
    assert valid7 == 1.0 and r7 > blind7 + 0.02  # measured: 0.76 vs 0.71 (copying the input)


def test_teacher_writes_to_a_hint_and_samples_alternatives(lamp2):
    t = get_task("LaMP-2")
    teacher = AnalyticTeacher(t, temperature=3.0).fit(lamp2["train"])
    e = lamp2["dev"][0]
    hinted = teacher.write([ChainRequest(t, e, e.profile[:3], hint="true story")], 4)[0]
    assert len(hinted) == 1 and check_chain(hinted[0], t, 3).answer == "true story" and not leaks_hint(hinted[0])
    many = teacher.write([ChainRequest(t, x, x.profile[:3]) for x in lamp2["dev"][:20]], 6)
    assert any(len(row) > 1 for row in many)  # sampling at a high temperature gives distinct answers
    assert all(check_chain(c, t, 3).valid for row in many for c in row)


@pytest.fixture
def synth3(tmp_path, lamp3):
    write_examples(lamp3["train"][:40], tmp_path / "LaMP_3", "LaMP-3", "train")
    return tmp_path


def test_build_accepts_only_valid_right_chains(synth3):
    cfg = ChainsConfig(task="LaMP-3", data=str(synth3), samples=3, batch_size=8, labeller="none")
    stats = ChainBuilder(cfg, synth3 / "c.jsonl").run(progress=False)
    recs = [json.loads(x) for x in (synth3 / "c.jsonl").read_text().splitlines()]
    assert stats["examples"] == 40 and stats["example_coverage"] == 1.0 and stats["chains"] == len(recs)
    t = get_task("LaMP-3")
    for r in recs:
        check = check_chain(r["chain"], t, len(r["items"]))
        assert check.valid and t.reward(check.answer, r["gold"]) >= 0.75 and r["reward"] >= 0.75
    per_id = {}
    for r in recs:
        per_id.setdefault(r["id"], set()).add(r["chain"])
    assert sum(len(v) for v in per_id.values()) == len(recs)  # no duplicate chain for an example
    assert stats["acceptance_rate"]["sampled"] < 1.0 and stats["rejected"]["wrong"] > 0  # rejection did something


def test_killed_build_resumes_without_loss_or_duplicates(synth3):
    cfg = ChainsConfig(task="LaMP-3", data=str(synth3), samples=2, batch_size=8, labeller="none")
    ChainBuilder(cfg, synth3 / "full.jsonl").run(progress=False)
    full = sorted(x for x in (synth3 / "full.jsonl").read_text().splitlines())

    class Killed(Exception):
        pass

    def kill(n_done):
        if n_done >= 16:
            raise Killed

    with pytest.raises(Killed):
        ChainBuilder(cfg, synth3 / "part.jsonl").run(progress=False, on_batch=kill)
    # a kill between the chain write and the example write of the next batch, mid-line
    extra = json.loads((synth3 / "full.jsonl").read_text().splitlines()[-1])
    with open(synth3 / "part.jsonl", "a") as fh:
        fh.write(json.dumps(extra) + "\n" + '{"id": "cut sh')

    calls = []

    class Counting(AnalyticTeacher):
        def write(self, requests, n):
            calls.extend(r.example.id for r in requests if r.hint is None)
            return super().write(requests, n)

    teacher = Counting("LaMP-3", temperature=cfg.temperature, seed=cfg.seed)
    builder = ChainBuilder(cfg, synth3 / "part.jsonl", teacher=teacher)
    teacher.fit(builder.examples())
    builder.run(progress=False)
    assert len(calls) == 40 - 16  # only unfinished examples were done again
    assert sorted((synth3 / "part.jsonl").read_text().splitlines()) == full
    ids = [json.loads(x)["id"] for x in (synth3 / "part.examples.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 40


def test_resume_refuses_other_settings(synth3):
    cfg = ChainsConfig(task="LaMP-3", data=str(synth3), limit=4, labeller="none")
    ChainBuilder(cfg, synth3 / "c.jsonl").run(progress=False)
    with pytest.raises(ChainsMismatchError, match="samples"):
        ChainBuilder(cfg.model_copy(update={"samples": 9}), synth3 / "c.jsonl").run(progress=False)


class ScriptedTeacher:
    """Wrong chains unhinted; hinted: one chain that leaks the hint, one clean; or untagged free text."""

    name = "scripted"

    def __init__(self, free_text=False):
        self.free_text = free_text

    def write(self, requests, n):
        out = []
        for r in requests:
            ans = r.hint or ("1" if float(r.example.gold) >= 3 else "5")  # wrong by 2 or more
            if self.free_text:
                out.append([f"The task asks for a score from 1 to 5.\n\nThe review says it works well.\n\n"
                            f"Item [1] got a {ans}, like the others.\n\nThis user tends to rate generously.\n\n"
                            f"So the score is {ans}.\nAnswer: {ans}"])
                continue
            chain = (f"<think>\n<understand_task>Score it.</understand_task>\n<examine_history>[1] is similar."
                     f"</examine_history>\n<infer_preference>Generous.</infer_preference>\n<conclude>{ans}.</conclude>"
                     f"\n</think>\n<answer>{ans}</answer>")
            out.append([chain.replace("Generous.", "The hint says so."), chain] if r.hint else [chain])
        return out


def test_rationalization_drops_chains_that_leak_the_hint(synth3):
    cfg = ChainsConfig(task="LaMP-3", data=str(synth3), limit=6, labeller="none")
    stats = ChainBuilder(cfg, synth3 / "r.jsonl", teacher=ScriptedTeacher()).run(progress=False)
    recs = [json.loads(x) for x in (synth3 / "r.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and all(r["source"] == "rationalized" and "hint" not in r["chain"] for r in recs)
    assert stats["rejected"]["leaked"] == 6 and stats["rejected"]["wrong"] == 6
    assert stats["acceptance_rate"] == {"sampled": 0.0, "rationalized": 0.5}
    assert leaks_hint("<think><verify>the gold label</verify></think>") and not leaks_hint("<think>ok</think><answer>gold</answer>")


def test_untagged_chains_are_labelled_by_embedding_similarity(synth3):
    cfg = ChainsConfig(task="LaMP-3", data=str(synth3), limit=3, labeller="embedding")
    stats = ChainBuilder(cfg, synth3 / "f.jsonl", teacher=ScriptedTeacher(free_text=True)).run(progress=False)
    assert stats["labelled_free_text"] == 6 and stats["chains"] == 3  # sampled (wrong) + rationalized (right)
    rec = json.loads((synth3 / "f.jsonl").read_text().splitlines()[0])
    tags = [s.tag for s in check_chain(rec["chain"], "LaMP-3", 4).steps]
    assert tags[0] == "understand_task" and tags[-1] == "conclude" and tags[2] == "examine_history"
    assert tags[3] in ("infer_preference", "identify_patterns")  # "This user tends to rate generously."


def test_llm_labeller_parses_tags_and_falls_back():
    class Backend:
        def generate(self, prompts, params):
            from tagpr.generation import Generation

            return [[Generation("1: understand_task\n2: <examine_history>\n3: banana")]]

    class Fallback:
        name = "fb"

        def label(self, steps):
            return ["verify"] * len(steps)

    assert LLMLabeller(Backend(), Fallback()).label(["a", "b", "c"]) == ["understand_task", "examine_history", "verify"]
    assert enforce_coverage(["a", "b [2]", "c", "d"], ["verify"] * 4) == [
        "understand_task", "examine_history", "infer_preference", "conclude"]


class TeacherServer(BaseHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        TeacherServer.requests.append(body)
        prompt = body["messages"][-1]["content"]
        hinted = "The right answer is:" in prompt
        ans = prompt.split("The right answer is: ")[1].split(".")[0] if hinted else "3"
        chain = (f"<think>\n<understand_task>Score.</understand_task>\n<examine_history>[1] and [2].</examine_history>\n"
                 f"<identify_patterns>Mostly {ans}s.</identify_patterns>\n<conclude>{ans}</conclude>\n</think>\n"
                 f"<answer>{ans}</answer>")
        choices = [{"index": i, "message": {"role": "assistant", "content": chain}, "finish_reason": "stop"}
                   for i in range(body.get("n", 1))]
        data = json.dumps({"choices": choices, "usage": {"prompt_tokens": 9, "completion_tokens": 40}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_openai_compatible_teacher_over_http(synth3):
    TeacherServer.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), TeacherServer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = ChainsConfig(task="LaMP-3", data=str(synth3), limit=8, teacher="openai", model="teacher-7b",
                           base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", samples=3, labeller="none",
                           threshold=1.0)
        stats = ChainBuilder(cfg, synth3 / "o.jsonl").run(progress=False)
    finally:
        srv.shutdown()
        srv.server_close()
    golds = {e.id: e.gold for e in ChainBuilder(cfg, synth3 / "o.jsonl").examples()[:8]}
    right = sum(g == "3" for g in golds.values())
    recs = [json.loads(x) for x in (synth3 / "o.jsonl").read_text().splitlines()]
    assert stats["examples_with_chain"] == 8 and len(recs) == 8  # the 3 samples are identical: deduplicated
    assert sum(r["source"] == "sampled" for r in recs) == right  # a "3" is right only where the gold is 3
    assert all(r["teacher"] == "openai:teacher-7b" for r in recs)
    first = TeacherServer.requests[0]
    assert first["model"] == "teacher-7b" and first["n"] == 3 and "<understand_task>" in first["messages"][-1]["content"]
    assert sum("The right answer is:" in r["messages"][-1]["content"] for r in TeacherServer.requests) == 8 - right


def test_cli_build_and_stats_with_plot(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["data", "synth", "--task", "LaMP-2", "--out", str(tmp_path), "--train-users", "30",
                               "--dev-users", "2"]).exit_code == 0
    r = runner.invoke(app, ["chains", "build", "--task", "LaMP-2", "--data", str(tmp_path), "--out",
                            str(tmp_path / "c"), "--labeller", "none", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"chains.jsonl", "chains.examples.jsonl", "chains.config.json"}
    r = runner.invoke(app, ["chains", "stats", str(tmp_path / "c" / "chains.jsonl")])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output[: r.output.rindex("}") + 1])
    assert stats["examples"] == 30 and stats["tag_frequency"]["examine_history"] == stats["chains"]
    assert (tmp_path / "c" / "chains.tags.png").read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["chains", "build", "--task", "LaMP-2", "--data", str(tmp_path), "--split", "dev",
                              "--out", str(tmp_path / "d"), "--teacher", "nope", "--no-progress"])
    assert bad.exit_code == 2 and "teacher 'nope': choose analytic or model" in bad.output


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=600))
def test_free_text_splitting_never_raises(text):
    class Same:
        name = "same"

        def label(self, steps):
            return ["verify"] * len(steps)

    steps, answer = split_free_text(text)
    out = tag_free_text(text, "LaMP-3", Same())
    assert out is None or check_chain(out, "LaMP-3", 0).steps


@pytest.mark.parametrize("task", ["LaMP-2", "LaMP-3", "LaMP-7"])
def test_compact_chains_keep_the_grammar_with_fewer_steps(task):
    from tagpr.pipeline.teachers import COMPACT_TAGS
    from tagpr.tags import parse_chain

    splits = generate_splits(task, 12, 2, seed=5)
    r = make_retriever("bm25")
    t = get_task(task)
    full, compact = (AnalyticTeacher(task, style=s).fit(splits["train"]) for s in ("full", "compact"))
    for e in splits["train"][:6]:
        from tagpr.retrieval import retrieve

        items = retrieve(e, t, r, 4)
        req = [ChainRequest(t, e, items)]
        a, b = full.write(req, 1)[0][0], compact.write(req, 1)[0][0]
        assert check_chain(b, t, len(items)).valid
        assert [s.tag for s in parse_chain(b).steps] == list(COMPACT_TAGS)
        assert len(b) < 0.8 * len(a)
        if t.kind == "rating":  # the compact chain reads its answer off the shown scores with the fitted rule
            from tagpr.pipeline.teachers import RATING_RULES

            scores = [int(t.item_output(it)) for it in items]
            assert parse_chain(b).answer == str(RATING_RULES[compact.rule](scores))
            assert compact.predict(e) == parse_chain(b).answer
        elif t.kind == "classification":  # the shown labels, read with the fitted rule
            from tagpr.pipeline.teachers import LABEL_RULES

            ranked = [lab for lab, _ in compact._label_scores(req[0])]
            shown = [t.item_output(it).strip() for it in items]
            assert parse_chain(b).answer == LABEL_RULES[compact.rule](shown, ranked) and parse_chain(b).answer in shown
            assert compact.predict(e) == parse_chain(b).answer
        else:  # the habits the shown items show, applied; no habit counts (a 135M student pasted "(1 of 11
            # texts)" into its tweets)
            from tagpr.pipeline.style import measure_habits, rewrite

            habits = measure_habits([t.item_output(p) for p in e.profile])
            shown = [h for h in habits if any(h.shown_in(t.item_output(it)) for it in items)]
            assert parse_chain(b).answer == t.parse(rewrite(t.retrieval_query(e.input), shown)[0])
            assert compact.predict(e) == parse_chain(b).answer
            if len(shown) == len(habits):
                assert parse_chain(a).answer == parse_chain(b).answer
            assert " texts)" in a and not re.search(r"\d+ of \d+ texts", b), b
            assert len(b) - len(parse_chain(b).answer) < 0.5 * (len(a) - len(parse_chain(a).answer))
        if t.kind != "generation":  # only what the prompt shows: the shown items' scores / labels
            shown = [t.item_output(it).strip() for it in items]
            assert "over all" not in b.lower() and "scores:" not in b.split("Shown scores")[0]
            if t.kind == "rating":
                assert f"Shown scores: {'; '.join(f'[{i}] {s}' for i, s in enumerate(shown, 1))}." in b
            else:
                from collections import Counter

                assert all(f'"{lab}" {c}' in b for lab, c in Counter(shown).most_common(3))
    with pytest.raises(ValueError, match="chain style 'tiny'"):
        AnalyticTeacher(task, style="tiny")


def test_compact_rating_rule_is_fitted_to_what_the_student_is_shown():
    """The compact rating teacher picks the rule with the lowest MAE on its fit examples: on synthetic users, whose
    similar reviews share scores, the nearest review's; on users whose nearest review says little, the middle."""
    from tagpr.data.loading import Example
    from tagpr.pipeline.teachers import RATING_RULES
    from tagpr.tags import parse_chain

    t = get_task("LaMP-3")
    splits = generate_splits("LaMP-3", 40, 2, seed=3)
    teacher = AnalyticTeacher(t, style="compact").fit(splits["train"])
    assert teacher.rule == "nearest" and teacher.rule_error["nearest"] < teacher.rule_error["middle"]

    # users who give 5 to most things whatever the words: the nearest review is often a stray 1 or 2
    users = []
    for u in range(30):
        profile = [{"id": f"{u}-{j}", "text": f"item {j} word{j % 5} thing{(j + u) % 3}",
                    "score": "5" if j % 4 else str(1 + (u + j) % 3)} for j in range(12)]
        q = "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 " \
            f"without further explanation. review: item word{u % 5} thing{u % 3}"
        users.append(Example(f"u{u}", q, profile, gold="5"))
    teacher = AnalyticTeacher(t, style="compact").fit(users)
    assert teacher.rule == "middle" and teacher.rule_error["middle"] < teacher.rule_error["nearest"]
    items = [{"id": "a", "text": "x", "score": "2"}, {"id": "b", "text": "y", "score": "5"},
             {"id": "c", "text": "z", "score": "4"}, {"id": "d", "text": "w", "score": "5"}]
    chain = teacher.write([ChainRequest(t, users[0], items)], 3)[0]
    assert len(chain) == 1  # one answer for one prompt, whatever the number of samples asked
    assert "In order: 2, 4, 5, 5; the middle one is 5." in chain[0] and parse_chain(chain[0]).answer == "5"
    assert RATING_RULES["middle"]([2, 5, 4, 5]) == 5 and RATING_RULES["nearest"]([2, 5, 4, 5]) == 2
    hinted = teacher.write([ChainRequest(t, users[0], items, hint="2")], 1)[0][0]
    assert parse_chain(hinted).answer == "2" and check_chain(hinted, t, 4).valid


def test_compact_rule_can_be_set_instead_of_fitted(tmp_path):
    """``rule`` fixes the compact chains' rule (the fit still reports every rule's error); an unknown rule, or one of
    another answer space, is refused naming the known ones; a build with the default still resumes one saved
    before the setting existed (its identity has no ``rule``)."""
    from tagpr.tags import parse_chain

    t = get_task("LaMP-3")
    splits = generate_splits("LaMP-3", 40, 2, seed=3)
    fitted = AnalyticTeacher(t, style="compact").fit(splits["train"])
    middle = AnalyticTeacher(t, style="compact", rule="middle").fit(splits["train"])
    assert fitted.rule == "nearest" and middle.rule == "middle" and middle.rule_error == fitted.rule_error
    items = [{"id": "a", "text": "x", "score": "2"}, {"id": "b", "text": "y", "score": "5"},
             {"id": "c", "text": "z", "score": "4"}, {"id": "d", "text": "w", "score": "5"}]
    e = splits["train"][0]
    for teacher, ans in ((fitted, "2"), (middle, "5")):
        chain = teacher.write([ChainRequest(t, e, items)], 1)[0][0]
        assert parse_chain(chain).answer == ans and check_chain(chain, t, 4).valid
    each = AnalyticTeacher(t, style="compact", rule="each").fit(splits["train"])  # one chain per rule, fitted first
    chains = each.write([ChainRequest(t, e, items)], 1)[0]
    assert [parse_chain(c).answer for c in chains] == ["2", "5"] and each.rule == "nearest"
    agree = [dict(it, score="4") for it in items]  # both rules say 4: still one chain of each form
    chains = each.write([ChainRequest(t, e, agree)], 1)[0]
    assert [parse_chain(c).answer for c in chains] == ["4", "4"] and "the middle one is 4" in chains[1]
    with pytest.raises(ValueError, match="fitted, each, nearest, middle"):
        AnalyticTeacher(t, style="compact", rule="best-shown")
    with pytest.raises(ValueError, match="most-shown"):
        ChainsConfig(task="LaMP-2", data=str(tmp_path), style="compact", rule="median")
    with pytest.raises(ValueError, match="only compact chains have rules"):
        ChainsConfig(task="LaMP-3", data=str(tmp_path), rule="each")  # style full
    with pytest.raises(ValueError, match="LaMP-7 has no rules"):
        ChainsConfig(task="LaMP-7", data=str(tmp_path), style="compact", rule="each")
    with pytest.raises(ValueError, match="not the model teacher's"):
        ChainsConfig(task="LaMP-3", data=str(tmp_path), teacher="model", style="compact", rule="middle")
    assert "rule" not in ChainsConfig(task="LaMP-3", data=str(tmp_path)).identity()
    middle = ChainsConfig(task="LaMP-3", data=str(tmp_path), style="compact", rule="middle")
    assert middle.identity()["rule"] == "middle"


def test_compact_label_rule_is_fitted_and_read_off_the_shown_labels():
    """Compact LaMP-2 chains conclude a label the prompt shows, with the rule that fits the users best (on
    synthetic users, whose items' words carry their tag, the shown label the input's words favour)."""
    from tagpr.pipeline.teachers import LABEL_RULES
    from tagpr.tags import parse_chain

    t = get_task("LaMP-2")
    splits = generate_splits("LaMP-2", 60, 40, seed=3)
    teacher = AnalyticTeacher(t, style="compact").fit(splits["train"])
    assert set(teacher.rule_error) == set(LABEL_RULES)
    assert teacher.rule == "best-shown" and teacher.rule_error["best-shown"] < teacher.rule_error["most-shown"]
    hits = [teacher.predict(e) == e.gold for e in splits["dev"]]
    assert sum(hits) / len(hits) > 0.6  # 40 users of another seed
    shown, ranked = ["drama", "comedy", "comedy", "action"], ["action", "drama", "comedy"]
    assert LABEL_RULES["most-shown"](shown, ranked) == "comedy" and LABEL_RULES["nearest"](shown, ranked) == "drama"
    assert LABEL_RULES["best-shown"](shown, ranked) == "action"
    e = splits["dev"][0]
    items = e.profile[:4]
    chains = teacher.write([ChainRequest(t, e, items)], 4)[0]
    assert len(chains) == 1 and check_chain(chains[0], t, 4).valid  # one answer for one prompt
    assert parse_chain(chains[0]).answer in {t.item_output(it).strip() for it in items}
    hint = next(lab for lab in t.labels if lab not in {t.item_output(it).strip() for it in items})
    hinted = teacher.write([ChainRequest(t, e, items, hint=hint)], 1)[0][0]
    assert parse_chain(hinted).answer == hint and check_chain(hinted, t, 4).valid


def test_a_check_phrase_never_spans_two_checks():
    """An unreadable check must not swallow the next one: '"x" maybe; "and" is in the input' is one check, of "and"."""
    from tagpr.pipeline.teachers import _CHECK_CLAIM_RE

    found = [{k: v for k, v in m.groupdict().items() if v is not None}
             for m in _CHECK_CLAIM_RE.finditer('"x" maybe; "and" is in the input; no "I am" in the input.')]
    assert found == [{"yes": "and"}, {"no": "I am"}]


def test_rewrite_chain_claims_are_verified_against_the_prompt():
    """verify_rewrite_chain: every compact LaMP-7 teacher chain scores 1; a false history claim, a wrong check, a
    change its checks do not support and an answer that does something else each lower the score."""
    from tagpr.pipeline.style import measure_habits
    from tagpr.pipeline.teachers import verify_rewrite_chain
    from tagpr.retrieval import retrieve
    from tagpr.training.rewards import FaithfulReward, reward_functions

    t = get_task("LaMP-7")
    splits = generate_splits("LaMP-7", 40, 2, seed=5)
    teacher = AnalyticTeacher(t, style="compact").fit(splits["train"])
    r = make_retriever("bm25")
    changed = 0
    for e in splits["train"]:
        items = retrieve(e, t, r, 4)
        chain = teacher.write([ChainRequest(t, e, items)], 1)[0][0]
        q, shown = t.retrieval_query(e.input), [t.item_output(it) for it in items]
        claims = verify_rewrite_chain(chain, q, shown)
        assert claims.parsed and claims.score == 1.0, (claims, chain)
        habits = measure_habits([t.item_output(p) for p in e.profile])
        full = verify_rewrite_chain(chain, q, shown, habits)
        assert full.score == 1.0 and full.coverage[0] == full.coverage[1], full
        if full.coverage[1]:  # naming no habit and keeping the input is right only without the profile
            lazy = (f"<think>\n<understand_task>x</understand_task>\n<examine_history>[1], [2] show how this user "
                    "writes.</examine_history>\n<identify_patterns>No habit of these items changes this input."
                    "</identify_patterns>\n<cross_reference>Keep the input's words as they are.</cross_reference>\n"
                    f"<conclude>y</conclude>\n</think>\n<answer>{q}</answer>")
            assert verify_rewrite_chain(lazy, q, shown).score == 1.0
            lazy_full = verify_rewrite_chain(lazy, q, shown, habits)
            assert lazy_full.coverage == (0, full.coverage[1]) and lazy_full.score <= 0.8
        if "->" not in chain:
            continue
        changed += 1
        # the answer keeps the input although the chain names a change: it does not follow itself
        kept = re.sub(r"<answer>.*</answer>", f"<answer>{q}</answer>", chain, flags=re.S)
        assert not verify_rewrite_chain(kept, q, shown).follows
        # the change named, but its check says the habit is not in the input: a wrong check, a wrong decision
        m = re.search(r'"([^"]+)" is in the input', chain)
        if m:
            wrong = chain.replace(m.group(0), f'no "{m.group(1)}" in the input')
            c = verify_rewrite_chain(wrong, q, shown)
            assert c.checks[0] == c.checks[1] - 1 and c.score < 1.0
        # a habit cited from an item that does not show it
        h = re.search(r"\[(\d)\] writes", chain)
        if h:
            bad = chain.replace(h.group(0), "[9] writes", 1)
            assert verify_rewrite_chain(bad, q, shown).history[0] < verify_rewrite_chain(chain, q, shown).history[0]
    assert changed >= 3
    # keep: nothing listed applies, and an answer that is not the input does not follow
    keep = ("<think>\n<understand_task>x</understand_task>\n"
            "<examine_history>[1] writes \"u\" for \"you\".</examine_history>\n"
            "<identify_patterns>no \"you\" in the input.</identify_patterns>\n"
            "<cross_reference>Keep the input's words as they are.</cross_reference>\n"
            "<conclude>y</conclude>\n</think>\n<answer>hello there</answer>")
    assert verify_rewrite_chain(keep, "hello there", ["see u soon"]).score == 1.0
    assert verify_rewrite_chain(keep, "hello there", ["see you soon"]).history == (0, 1)
    c = verify_rewrite_chain(keep, "are you there", ["see u soon"])
    assert (c.checks, c.decision, c.follows) == ((0, 1), False, False)
    assert verify_rewrite_chain("no chain at all", "x", []).score == 0.0
    # the reward: columns input and shown, one float per completion; only for tasks that rewrite their input
    rew = FaithfulReward("LaMP-7")
    ask = "Paraphrase the following tweet without any explanation before or after it: hello there"
    assert rew([keep, "junk"], input=[ask] * 2, shown=[json.dumps(["see u soon"])] * 2) == [1.0, 0.0]
    # with the profile (rl_rows' columns): the user writes "u" for "you", the shown tweet shows it, so the chain
    # must name it; it does, and the input has no "you"
    tweets = ["see u soon", "thank u so much", "are u ok"]
    profile = json.dumps([{"id": str(i), "text": t} for i, t in enumerate(tweets)])
    assert rew([keep], input=[ask], shown=[json.dumps(["see u soon"])], profile=[profile]) == [1.0]
    with pytest.raises(ValueError, match="'input' and 'shown'"):
        rew([keep], input=[ask])
    assert [f.__name__ for f in reward_functions("LaMP-7", {"task": 1.0})[0]] == ["task", "tag", "faithful"]
    with pytest.raises(ValueError, match="rewrite their input"):
        reward_functions("LaMP-3", {"task": 1.0, "faithful": 1.0})
