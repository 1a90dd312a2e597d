"""Leave-one-out questions from histories alone (tagpr.data.loo, `tagpr data loo`)."""

import json
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tagpr.cli import app
from tagpr.data.loading import Example, load_split, write_examples
from tagpr.data.loo import build_loo, find_leaks, group_users, neutralize_text, quote_text, write_loo
from tagpr.data.synthetic import generate
from tagpr.tasks import get_task

SHARED_LAMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "lamp"
runner = CliRunner()


def _norm(s):
    return " ".join(str(s).split()).casefold()


def _held_out(e, users):
    """The held-out item of a LOO example, from its user's merged history."""
    return users[e.user_id].items[e.extra["loo"]["item_index"]]


def _check_no_leak(t, loo, users):
    for e in loo:
        item = _held_out(e, users)
        assert find_leaks(e, t) == []
        if item.get("id") is not None:
            assert item["id"] not in {p.get("id") for p in e.profile}
        for f in t.question_fields:
            assert _norm(item[f]) not in {_norm(p.get(f, "")) for p in e.profile}
        if t.kind == "generation":
            assert _norm(e.gold) not in {_norm(p.get(t.output_field, "")) for p in e.profile}


def _users(examples):
    return {u.key: u for u in group_users(examples)}


@pytest.mark.parametrize("task", ["LaMP-2", "LaMP-3", "LaMP-7"])
def test_held_out_item_never_in_its_profile_and_gold_is_its_output(task):
    t = get_task(task)
    exs = generate(task, 12, seed=3)
    loo = build_loo(exs, task, per_user=3, seed=0, input_style="copy")
    users = _users(exs)
    assert len(loo) == 36 and len({e.id for e in loo}) == 36
    _check_no_leak(t, loo, users)
    for e in loo:
        item = _held_out(e, users)
        assert e.gold == item[t.output_field]
        assert e.input == t.question(item)  # the official question form from the registry
        twins = [p for p in users[e.user_id].items if any(_norm(p[f]) == _norm(item[f]) for f in t.question_fields)]
        assert len(e.profile) == len(users[e.user_id].items) - len(twins)  # only the item and its duplicates go
        assert e.gold is not None and t.is_valid_answer(e.gold)


def _tiny_lamp3():
    prof = [{"id": f"p{i}", "text": f"review number {i}", "score": str(1 + i % 5)} for i in range(6)]
    prof.append({"id": "dup", "text": "  Review   NUMBER 0 ", "score": "4"})  # same text as p0, other id/score
    prof.append({"id": "p1", "text": "another copy of p1", "score": "2"})  # same id as p1 (deduped on merge)
    return [Example("q1", "What is the score ... review: x", prof, user_id="u1")]


def test_exact_duplicates_of_the_held_out_item_are_removed():
    t = get_task("LaMP-3")
    exs = _tiny_lamp3()
    users = _users(exs)
    assert [p["id"] for p in users["u1"].items] == ["p0", "p1", "p2", "p3", "p4", "p5", "dup"]
    loo = build_loo(exs, t, per_user=100, min_profile=1)
    assert len(loo) == 7
    _check_no_leak(t, loo, users)
    by_item = {e.extra["loo"]["item_id"]: e for e in loo}
    assert {p["id"] for p in by_item["p0"].profile} == {"p1", "p2", "p3", "p4", "p5"}  # "dup" dropped too
    assert {p["id"] for p in by_item["dup"].profile} == {"p1", "p2", "p3", "p4", "p5"}
    assert len(by_item["p2"].profile) == 6 and by_item["p2"].gold == "3"
    assert by_item["p2"].input.endswith("review: review number 2")


def test_lamp7_items_without_ids_and_duplicate_tweets():
    t = get_task("LaMP-7")
    tweets = ["omg sooo tired lol", "OMG sooo  tired lol ", "at the beach w/ my besties", "u r the best",
              "coffee time", "new shoes yay"]
    exs = [Example("7", "Paraphrase ...: x", [{"text": x} for x in tweets])]
    for style in ("copy", "neutral"):
        loo = build_loo(exs, t, per_user=10, min_profile=2, input_style=style)
        users = _users(exs)
        _check_no_leak(t, loo, users)
        first = next(e for e in loo if e.extra["loo"]["item_index"] == 0)
        assert first.gold == "omg sooo tired lol" and len(first.profile) == 4  # its case/space twin is gone
        assert first.user_id == "example-7" and first.id == "example-7-loo-i0"
    copy = build_loo(exs, t, per_user=10, min_profile=2, input_style="copy")
    assert all(t.retrieval_query(e.input) == e.gold.strip() for e in copy)  # the limitation: input is the gold
    neutral = {e.extra["loo"]["item_index"]: e for e in build_loo(exs, t, per_user=10, min_profile=2)}
    assert t.retrieval_query(neutral[0].input) == "So tired."
    assert t.retrieval_query(neutral[3].input) == "You are the best."
    assert neutral[3].gold == "u r the best"


def test_quoted_inputs_take_the_forms_of_lamps_paraphrases():
    rng = random.Random(0)
    assert quote_text("So tired.", rng) == '"So tired."'
    forms = Counter(quote_text("@amy i love it.", random.Random(s)) for s in range(600))
    assert set(forms) == {'"I love it."', '"@amy i love it."', '"I love it." - @amy', '"I love it," tweeted @amy.'}
    assert 0.45 < forms['"I love it."'] / 600 < 0.7  # the mention dropped, as in 18 of LaMP's 31 quoted replies
    for junk in ("", "@", "@amy", '"', "@amy   ", "\n@x\t,"):
        assert isinstance(quote_text(junk, rng), str)
    t = get_task("LaMP-7")
    tweets = [f"@friend{i} tweet number {i} about the {w}" for i, w in enumerate(
        ["beach", "game", "exam", "party", "rain", "movie", "coffee", "bus"])] + ["just a plain tweet here"]
    exs = [Example("7", "Paraphrase ...: x", [{"text": x} for x in tweets])]
    plain = build_loo(exs, t, per_user=9, min_profile=2)
    assert [e.to_json() for e in build_loo(exs, t, per_user=9, min_profile=2, quoted=0.0)] == \
        [e.to_json() for e in plain]
    every = build_loo(exs, t, per_user=9, min_profile=2, quoted=1.0)
    _check_no_leak(t, every, _users(exs))
    shown = [t.retrieval_query(e.input) for e in every]
    assert all(q.startswith('"') for q in shown) and [e.gold for e in every] == [e.gold for e in plain]
    forms = Counter("attribution" if q.endswith(" - @friend%d" % e.extra["loo"]["item_index"]) or "tweeted @friend"
                    in q else "inside" if q.startswith('"@friend') else "plain" for q, e in zip(shown, every))
    assert sum(forms.values()) == 9 and forms["plain"] >= 1  # the plain tweet, and replies whose mention went
    some = build_loo(exs, t, per_user=9, min_profile=2, quoted=0.5)
    assert 0 < sum(t.retrieval_query(e.input).startswith('"') for e in some) < 9
    assert [e.to_json() for e in some] == [e.to_json() for e in build_loo(exs, t, per_user=9, min_profile=2,
                                                                            quoted=0.5)]
    with pytest.raises(ValueError, match="quoted must be a share"):
        build_loo(exs, t, per_user=9, min_profile=2, quoted=1.5)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.from_regex(r"@\w{0,5}[ ,:]*.{0,20}"),
       seed=st.integers(0, 3))
def test_quote_text_and_neutralize_text_never_raise(text, seed):
    quoted = quote_text(neutralize_text(text), random.Random(seed))
    assert quoted.startswith('"') and quoted.count('"') >= 2


def test_neutralize_text():
    assert neutralize_text("@amy omg i LOVE it!!! &lt;3 :) http://t.co/x") == "@amy I love it!"
    assert neutralize_text("sooo gonna miss u guys ... xx") == "So going to miss you guys."
    assert neutralize_text("Thanksss Heaven 😀") == "Thanks Heaven."
    assert neutralize_text("lol :)") == ""
    assert neutralize_text("Plain text stays.") == "Plain text stays."


def test_deterministic_per_seed_and_independent_of_user_order():
    exs = generate("LaMP-3", 15, seed=1)
    a = build_loo(exs, "LaMP-3", per_user=2, seed=7)
    b = build_loo(exs, "LaMP-3", per_user=2, seed=7)
    assert [e.to_json() for e in a] == [e.to_json() for e in b] and [e.gold for e in a] == [e.gold for e in b]
    c = build_loo(exs, "LaMP-3", per_user=2, seed=8)
    assert {e.id for e in a} != {e.id for e in c}
    shuffled = list(exs)
    random.Random(0).shuffle(shuffled)
    assert {e.id for e in build_loo(shuffled, "LaMP-3", per_user=2, seed=7)} == {e.id for e in a}


def test_per_user_respected():
    exs = generate("LaMP-2", 10, seed=2, profile_size=(8, 12))
    for n in (1, 3):
        loo = build_loo(exs, "LaMP-2", per_user=n, min_profile=4)
        assert Counter(e.user_id for e in loo) == {u.key: n for u in group_users(exs)}
    every = build_loo(exs, "LaMP-2", per_user=1000, min_profile=4)  # more than a history holds: all of it
    assert Counter(e.user_id for e in every) == {u.key: len(u.items) for u in group_users(exs)}


def test_users_are_grouped_by_user_id_else_profile_identity():
    p1 = [{"id": "a", "text": "t a", "score": "5"}, {"id": "b", "text": "t b", "score": "4"}]
    p2 = [{"id": "b", "text": "t b", "score": "4"}, {"id": "c", "text": "t c", "score": "3"}]
    by_id = group_users([Example("1", "q", p1, user_id="u"), Example("2", "q", p2, user_id="u")])
    assert len(by_id) == 1 and [p["id"] for p in by_id[0].items] == ["a", "b", "c"] and by_id[0].example_ids == ["1", "2"]
    by_profile = group_users([Example("1", "q", p1), Example("2", "q", list(reversed(p1))), Example("3", "q", p2)])
    assert [(u.key, u.example_ids) for u in by_profile] == [("example-1", ["1", "2"]), ("example-3", ["3"])]


def test_clear_errors():
    exs = _tiny_lamp3()
    with pytest.raises(ValueError, match=r"LaMP-3: no leave-one-out question.*min_profile=10.*most left: 6"):
        build_loo(exs, "LaMP-3", min_profile=10)
    with pytest.raises(ValueError, match=r"LaMP-1: cannot build .*citations"):
        build_loo([Example("1", "q", [{"title": "t", "abstract": "a"}] * 3)], "LaMP-1")
    with pytest.raises(ValueError, match="per_user"):
        build_loo(exs, "LaMP-3", per_user=0)
    with pytest.raises(ValueError, match="input_style"):
        build_loo(exs, "LaMP-3", input_style="paraphrase")
    # a user too small is skipped while others still give questions
    small = Example("s", "q", [{"id": "z1", "text": "only", "score": "3"}, {"id": "z2", "text": "two", "score": "1"}])
    loo = build_loo([*exs, small], "LaMP-3", min_profile=2)
    assert {e.user_id for e in loo} == {"u1"}


def test_registry_questions_match_the_synthetic_official_inputs():
    for task in ("LaMP-2", "LaMP-3", "LaMP-7"):
        t = get_task(task)
        for e in generate(task, 5, seed=4):
            assert t.question({f: t.retrieval_query(e.input) for f in t.question_fields}) == e.input
    assert get_task("LaMP-1").question_template is None and get_task("LaMP-4").question_fields == ("text",)
    assert get_task("LaMP-5").question({"abstract": "We show", "title": "T"}).endswith("of a paper: We show")


def test_write_loo_round_trip_and_no_overwrite(tmp_path):
    loo = build_loo(generate("LaMP-7", 6, seed=0), "LaMP-7", per_user=2)
    q, o = write_loo(loo, tmp_path, "LaMP-7")
    assert q == tmp_path / "LaMP_7" / "train_questions.json" and o.name == "train_outputs.json"
    back = load_split(tmp_path, "LaMP-7", "train", require_golds=True)
    assert [(e.id, e.input, e.gold, e.profile, e.user_id) for e in back] == [(e.id, e.input, e.gold, e.profile, e.user_id) for e in loo]
    with pytest.raises(FileExistsError):
        write_loo(loo, tmp_path, "LaMP-7")
    write_loo(loo[:3], tmp_path, "LaMP-7", overwrite=True)
    assert len(load_split(tmp_path, "LaMP-7", "train")) == 3


def test_cli_data_loo(tmp_path):
    src = tmp_path / "src"
    write_examples(generate("LaMP-3", 8, seed=0), src / "LaMP_3", "LaMP-3", "dev")
    out = tmp_path / "out"
    args = ["data", "loo", "--task", "LaMP-3", "--data", str(src), "--split", "dev", "--out", str(out),
            "--per-user", "2", "--seed", "3"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["questions"] == 16 and summary["users"] == 8
    golds = json.loads((out / "LaMP_3" / "train_outputs.json").read_text())
    assert golds["task"] == "LaMP_3" and len(golds["golds"]) == 16
    assert len(json.loads((out / "LaMP_3" / "train_questions.json").read_text())) == 16
    r = runner.invoke(app, args)  # exists: refused
    assert r.exit_code == 2 and "exists" in r.output
    for bad, msg in ((["--task", "LaMP-1"], "LaMP-1"), (["--min-profile", "999"], "min_profile"),
                     (["--data", str(tmp_path / "nowhere")], "no dev questions"), (["--task", "LaMP-9"], "unknown task")):
        r = runner.invoke(app, [*args, "--overwrite", *bad])
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), r.output  # rich wraps at 80 columns


# ------------------------------------------------------------------------------ shared real data
@pytest.fixture
def shared_lamp() -> Path:
    if not (SHARED_LAMP / "LaMP_3" / "dev_questions.json").exists() or not (SHARED_LAMP / "LaMP_7").exists():
        pytest.skip("../shared/data/lamp is not available")
    return SHARED_LAMP


def _rating_floors(t, exs):
    golds = [e.gold for e in exs]
    most_frequent = [Counter(str(p["score"]).strip() for p in e.profile).most_common(1)[0][0] for e in exs]
    return t.metrics(["5"] * len(exs), golds)["mae"], t.metrics(most_frequent, golds)["mae"]


@pytest.mark.shared
def test_shared_lamp3_loo_is_leak_free_and_representative(shared_lamp):
    t = get_task("LaMP-3")
    dev = load_split(shared_lamp, t, "dev")
    assert all(t.question({"text": t.retrieval_query(e.input)}) == e.input for e in dev)  # registry == real inputs
    loo = build_loo(dev, t, per_user=40, seed=0)
    users = _users(dev)
    assert len(users) == 6 and len(loo) == 240
    _check_no_leak(t, loo, users)
    assert all(e.gold == _held_out(e, users)["score"] for e in loo)
    real = _rating_floors(t, dev)
    floors = _rating_floors(t, loo)
    assert real == pytest.approx((0.496, 0.392), abs=1e-3)  # SOURCES.md anchors
    assert floors == pytest.approx((0.446, 0.371), abs=1e-3)
    assert abs(floors[0] - real[0]) < 0.1 and abs(floors[1] - real[1]) < 0.1
    assert statistics.mean(len(e.profile) for e in loo) > 50  # the user's whole merged history, minus the item


@pytest.mark.shared
def test_shared_lamp7_loo_is_leak_free_and_copy_floors(shared_lamp):
    t = get_task("LaMP-7")
    dev = load_split(shared_lamp, t, "dev")
    assert all(t.question({"text": t.retrieval_query(e.input)}) == e.input for e in dev)
    users = _users(dev)
    assert len(users) == 989
    copy_r1 = {}
    for style in ("copy", "neutral"):
        loo = build_loo(dev, t, per_user=1, seed=0, input_style=style)
        assert len(loo) == 987  # two users have a one-tweet history
        _check_no_leak(t, loo, users)
        assert all(e.gold == _held_out(e, users)["text"] for e in loo)
        copy_r1[style] = t.metrics([t.retrieval_query(e.input) for e in loo], [e.gold for e in loo])["rouge-1"]
    real = t.metrics([t.retrieval_query(e.input) for e in dev], [e.gold for e in dev])["rouge-1"]
    assert copy_r1["copy"] == 1.0 and real == pytest.approx(0.4638, abs=5e-4)
    assert copy_r1["neutral"] == pytest.approx(0.963, abs=5e-3)  # neutral inputs: far closer to the gold than LaMP's


def test_run_trains_on_profiles_without_the_items_its_eval_questions_ask_about(tmp_path):
    """`tagpr run` with train_from: profiles: training questions come from the eval split's profiles, and an item
    that one eval question asks about (kept by LaMP in a sibling question's profile) is never a training
    question nor in a training profile; evaluation reads the given directory."""
    from tagpr.end_to_end import RunPaths, RunSection, _data

    t = get_task("LaMP-3")
    base = generate("LaMP-3", 6, seed=3)
    # two questions of one user, each holding the other's review (and score) in its profile
    a, b = base[0], base[1]
    q_a = {"id": "qa", "text": "the blender died after a week, loud and weak", "score": "1"}
    q_b = {"id": "qb", "text": "solid kettle, boils fast, looks great", "score": "5"}
    a2 = Example(id="A", input=t.question(q_a), profile=a.profile + [q_b], user_id="u1", gold="1")
    b2 = Example(id="B", input=t.question(q_b), profile=a.profile + [q_a], user_id="u1", gold="5")
    lamp = tmp_path / "lamp"
    write_examples([a2, b2, b], lamp / "LaMP_3", t, "dev")
    run = RunSection(task="LaMP-3", data=str(lamp), train_from="profiles", loo_per_user=50)
    train_dir, eval_dir = _data(run, "LaMP-3", RunPaths(tmp_path / "run"))
    assert eval_dir == lamp and train_dir == tmp_path / "run" / "data"
    train = load_split(train_dir, t, "train", require_golds=True)
    asked = {_norm(q_a["text"]), _norm(q_b["text"])}
    assert train and all(_norm(t.retrieval_query(e.input)) not in asked for e in train)
    assert all(_norm(p["text"]) not in asked for e in train for p in e.profile)
    with pytest.raises(ValueError, match="run.data"):
        RunSection(task="LaMP-3", train_from="profiles")


def test_synthetic_run_trains_on_the_training_users_histories_alone(tmp_path):
    """`tagpr run` with train_from: train-profiles on synthetic users: the training split is leave-one-out
    questions from the training users' profiles (none of their own questions), the dev users untouched."""
    from tagpr.data.synthetic import generate_splits
    from tagpr.end_to_end import RunPaths, RunSection, _data

    t = get_task("LaMP-2")
    run = RunSection(task="LaMP-2", synthetic_train_users=6, synthetic_dev_users=3, train_from="train-profiles",
                     loo_per_user=2)
    train_dir, eval_dir = _data(run, "LaMP-2", RunPaths(tmp_path / "run"))
    assert train_dir == eval_dir == tmp_path / "run" / "data"
    train = load_split(train_dir, t, "train", require_golds=True)
    users = generate_splits("LaMP-2", 6, 3, seed=0)
    assert len(train) == 12 and all("-loo-" in e.id for e in train)
    assert len({e.user_id for e in train}) == 6  # two questions from each training user
    asked = {e.input for e in users["train"]}
    assert not asked & {e.input for e in train}
    assert [e.id for e in load_split(eval_dir, t, "dev", require_golds=True)] == [e.id for e in users["dev"]]


def test_rl_users_give_more_leave_one_out_questions(tmp_path):
    """run.rl_loo_per_user: the users whose questions start at rl_offset (the RL prompts) give that many
    leave-one-out questions; the SFT users' questions before rl_offset are those of loo_per_user, unchanged."""
    from tagpr.end_to_end import RunPaths, RunSection, _data

    t = get_task("LaMP-2")
    common = dict(task="LaMP-2", synthetic_train_users=6, synthetic_dev_users=2, train_from="train-profiles",
                  loo_per_user=2, rl_offset=4)
    plain = load_split(_data(RunSection(**common), "LaMP-2", RunPaths(tmp_path / "a"))[0], t, "train")
    more = load_split(_data(RunSection(**common, rl_loo_per_user=5), "LaMP-2", RunPaths(tmp_path / "b"))[0], t,
                      "train")
    assert [e.id for e in more[:4]] == [e.id for e in plain[:4]]  # SFT's questions: the first two users', as before
    sft_users = {e.user_id for e in plain[:4]}
    rl = more[4:]
    assert len(sft_users) == 2 and not sft_users & {e.user_id for e in rl}
    assert len({e.user_id for e in rl}) == 4 and len(rl) == 20  # five questions from each of the other four
    with pytest.raises(ValueError, match="rl_loo_per_user"):
        RunSection(task="LaMP-2", rl_loo_per_user=4)  # train_from: split
    with pytest.raises(ValueError, match="rl_offset > 0"):
        RunSection(**{**common, "rl_offset": 0}, rl_loo_per_user=5)  # SFT's questions would change too


def test_run_data_is_reused_only_with_the_settings_it_was_built_with(tmp_path):
    """RUN/data records the run settings it was built with (data.json); a resumed run with other leave-one-out or
    synthetic-user settings is refused, naming them, instead of training on the old questions."""
    from tagpr.end_to_end import DATA_SETTINGS, RunPaths, RunSection, _data

    t = get_task("LaMP-2")
    common = dict(task="LaMP-2", synthetic_train_users=6, synthetic_dev_users=2, train_from="train-profiles",
                  loo_per_user=2, rl_offset=4)
    paths = RunPaths(tmp_path / "run")
    first = load_split(_data(RunSection(**common), "LaMP-2", paths)[0], t, "train")
    recorded = json.loads((paths.data / DATA_SETTINGS).read_text())
    assert recorded["loo_per_user"] == 2 and recorded["synthetic_train_users"] == 6
    again = load_split(_data(RunSection(**common), "LaMP-2", paths)[0], t, "train")  # resumed: the same questions
    assert [e.id for e in again] == [e.id for e in first]
    with pytest.raises(ValueError, match=r"built with other run settings \{'loo_per_user': \(2, 3\)\}.*--overwrite"):
        _data(RunSection(**{**common, "loo_per_user": 3}), "LaMP-2", paths)
    with pytest.raises(ValueError, match=r"'rl_loo_per_user': \(None, 5\), 'rl_offset': \(None, 4\)"):
        _data(RunSection(**common, rl_loo_per_user=5), "LaMP-2", paths)
    with pytest.raises(ValueError, match=r"'loo_quoted': \(None, 0.25\)"):  # recorded once set
        _data(RunSection(**common, loo_quoted=0.25), "LaMP-2", paths)
    (paths.data / DATA_SETTINGS).unlink()  # data built before the settings were recorded: taken as it is
    _data(RunSection(**{**common, "loo_per_user": 3}), "LaMP-2", paths)
    assert json.loads((paths.data / DATA_SETTINGS).read_text())["loo_per_user"] == 3
