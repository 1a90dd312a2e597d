"""Paired cluster bootstrap (tagpr.stats): agreement with tagpr.scoring, coverage, significance, users kept
together, untrusted predictions, evaluation run directories, `tagpr compare` and the end-to-end tables."""

import json
import random
import time

import numpy as np
import pytest
from fakes import FixedBackend
from typer.testing import CliRunner

from tagpr import scoring, stats
from tagpr.cli import app
from tagpr.data.loading import Example, write_examples
from tagpr.evaluation import EvalConfig, EvalRun, run_records
from tagpr.tasks import get_task

runner = CliRunner()
LAMP2 = get_task("LaMP-2")


class _Broken:
    def __str__(self):
        raise RuntimeError("no text")


GARBAGE = [None, "", "nan", "inf", "-inf", "1e999", "I cannot tell.", 3, {"a": 1}, _Broken(), "x" * 30_000]


def _data(task, n_users, seed, garbage=True):
    """golds, two methods' predictions and user ids (1..5 examples per user, users interleaved)."""
    rng = random.Random(seed)
    t = get_task(task)
    users = [f"u{u}" for u in range(n_users) for _ in range(1 + u % 5)]
    rng.shuffle(users)
    words = "the a cat dog sat on mat happy sad today".split()

    def gold():
        if t.kind == "classification":
            return rng.choice(t.labels)
        if t.kind == "rating":
            return str(rng.randint(1, 5))
        return " ".join(rng.choices(words, k=6))

    def pred(g):
        r = rng.random()
        if garbage and r < 0.1:
            return rng.choice(GARBAGE)
        if r < 0.5:
            return g
        return gold()

    golds = [gold() for _ in users]
    return golds, {"a": [pred(g) for g in golds], "b": [pred(g) for g in golds]}, users


# ----------------------------------------------------------------------------- agreement with scoring
@pytest.mark.parametrize("task", ["LaMP-1", "LaMP-2", "LaMP-3", "LaMP-7"])
def test_every_resample_is_scorings_metric_on_the_resampled_users(task):
    """A resample's metrics are tagpr.scoring's corpus metrics (macro-F1 and RMSE included) computed on the
    drawn users' examples; the point estimates are task.metrics on the full sample."""
    t = get_task(task)
    golds, preds, users = _data(task, 15, seed=1)
    bs = stats.bootstrap_samples(task, golds, preds, users, resamples=12, seed=7)
    cluster, n_clusters, unit = stats._clusters(users, len(golds))
    assert unit == "users" and n_clusters == bs.clusters == 15
    counts = stats.resample_counts(np.random.default_rng(7), n_clusters, 12)  # the same draws
    assert (counts.sum(axis=1) == n_clusters).all()
    for m, p in preds.items():
        text = [scoring._as_text(x) for x in p]
        full = t.metrics(text, golds)
        for k, v in full.items():
            assert bs.point[m][k] == pytest.approx(v, abs=1e-12)
        rewards = [t.reward(x, g) for x, g in zip(p, golds)]
        assert bs.point[m][stats.REWARD] == pytest.approx(sum(rewards) / len(rewards), abs=1e-12)
        for b in range(12):
            idx = [i for c in range(n_clusters) for _ in range(counts[b, c]) for i in np.flatnonzero(cluster == c)]
            want = t.metrics([text[i] for i in idx], [golds[i] for i in idx])
            for k, v in want.items():
                assert bs.samples[m][k][b] == pytest.approx(v, abs=1e-9), (m, k, b)


def test_unparsable_predictions_never_raise_and_score_as_scoring_says():
    n = len(GARBAGE)
    parts = stats.example_parts(LAMP2, GARBAGE, ["comedy"] * n)
    assert parts["correct"].sum() == 0 and (parts["pred"] == -1).all() and parts["reward"].sum() == 0
    # a rating that is not a finite number scores as the worse of 1 and 5: gold 2 -> 5 (error 3), gold 3 -> 5 (tie)
    parts = stats.example_parts("LaMP-3", GARBAGE, ["2"] * n)
    unparsable = [i for i, x in enumerate(GARBAGE) if not isinstance(x, int)]  # the int 3 is a rating: error 1
    assert parts["abs_error"][unparsable].tolist() == [3.0] * len(unparsable) and parts["abs_error"].sum() == 3.0 * (n - 1) + 1
    assert stats.example_parts("LaMP-3", ["nan", "4"], ["3", "3"])["abs_error"].tolist() == [2.0, 1.0]
    parts = stats.example_parts("LaMP-7", GARBAGE, ["the cat sat"] * n)
    assert parts["rouge-1"].max() == 0.0
    for task in ("LaMP-2", "LaMP-3", "LaMP-7"):
        gold = {"LaMP-2": "comedy", "LaMP-3": "2", "LaMP-7": "the cat sat"}[task]
        comp = stats.paired_bootstrap(task, [gold] * n, {"ref": [gold] * n, "junk": GARBAGE}, "ref", resamples=200)
        st = comp.row("junk").metrics[comp.metric]
        assert st.significant and st.better is False  # the worst scores, flagged as worse
    # an example whose prediction is missing altogether (None) is simply wrong
    comp = stats.compare_records("LaMP-2", {"r": [{"id": "1", "gold": "comedy", "answer": "comedy"}],
                                            "m": [{"id": "1", "gold": "comedy"}]}, "r", resamples=50)
    assert comp.row("m").metrics["accuracy"].value == 0.0


# ------------------------------------------------------------------------------- intervals and flags
def test_ci_of_a_known_difference_covers_it():
    rng = random.Random(3)
    golds = [rng.choice(LAMP2.labels) for _ in range(200)]
    ref = [g if rng.random() < 0.5 else "I cannot tell." for g in golds]
    wrong = [i for i, (p, g) in enumerate(zip(ref, golds)) if p != g]
    better = list(ref)
    for i in wrong[:20]:  # exactly 20 of 200 examples turned right: +0.1 accuracy
        better[i] = golds[i]
    users = [f"u{i // 4}" for i in range(200)]
    comp = stats.paired_bootstrap("LaMP-2", golds, {"ref": ref, "better": better}, "ref", users)
    st = comp.row("better").metrics["accuracy"]
    assert st.diff == pytest.approx(0.1)
    assert st.diff_ci[0] < 0.1 < st.diff_ci[1] and st.diff_ci[0] > 0  # only improvements: never below 0
    assert st.significant and st.better
    assert comp.users == 50 and comp.unit == "users" and comp.n == 200


def test_intervals_cover_a_true_difference_at_about_the_nominal_rate():
    """Simulated users with their own ability: B is right 0.15 more often than A for every user.  The 95%
    interval of the accuracy difference must cover 0.15 in about 95% of datasets."""
    rng = np.random.default_rng(11)
    covered, trials = 0, 100
    for trial in range(trials):
        sizes = rng.integers(1, 7, size=60)
        ability = rng.uniform(0.2, 0.8, size=60)
        users = np.repeat(np.arange(60), sizes)
        p = ability[users]
        golds = ["comedy"] * len(users)
        a = np.where(rng.random(len(users)) < p, "comedy", "horror")
        b = np.where(rng.random(len(users)) < p + 0.15, "comedy", "horror")
        comp = stats.paired_bootstrap("LaMP-2", golds, {"a": list(a), "b": list(b)}, "a", list(users),
                                      resamples=1000, seed=trial)
        lo, hi = comp.row("b").metrics["accuracy"].diff_ci
        covered += lo <= 0.15 <= hi
    assert 0.88 <= covered / trials <= 1.0, covered


def test_identical_methods_differ_by_zero_and_are_not_significant():
    for task in ("LaMP-2", "LaMP-3", "LaMP-7"):
        golds, preds, users = _data(task, 30, seed=4)
        comp = stats.paired_bootstrap(task, golds, {"a": preds["a"], "same": list(preds["a"])}, "a", users, resamples=300)
        for k, st in comp.row("same").metrics.items():
            assert st.diff == 0.0 and st.diff_ci == (0.0, 0.0) and not st.significant and st.better is None, k
            assert st.ci == comp.row("a").metrics[k].ci
        assert comp.row("a").metrics[comp.metric].diff is None  # the reference row


def test_large_real_effects_are_flagged_in_the_metrics_direction():
    rng = random.Random(5)
    golds = [rng.choice(LAMP2.labels) for _ in range(150)]
    users = [f"u{i // 3}" for i in range(150)]
    weak = [g if rng.random() < 0.3 else rng.choice(LAMP2.labels) for g in golds]
    strong = [g if rng.random() < 0.9 else rng.choice(LAMP2.labels) for g in golds]
    comp = stats.paired_bootstrap("LaMP-2", golds, {"weak": weak, "strong": strong}, "weak", users)
    for k in ("accuracy", "f1", stats.REWARD):
        st = comp.row("strong").metrics[k]
        assert st.significant and st.better and st.diff_ci[0] > 0.4, k
    # rating: lower MAE / RMSE is better, so a negative difference is an improvement
    golds = [str(rng.randint(1, 5)) for _ in range(150)]
    off = [str(min(5, int(g) + 2)) if int(g) <= 3 else "1" for g in golds]
    close = [g if rng.random() < 0.8 else str(max(1, int(g) - 1)) for g in golds]
    comp = stats.paired_bootstrap("LaMP-3", golds, {"off": off, "close": close}, "off", users)
    for k in ("mae", "rmse"):
        st = comp.row("close").metrics[k]
        assert st.diff < -1 and st.diff_ci[1] < 0 and st.significant and st.better, k
    comp = stats.paired_bootstrap("LaMP-3", golds, {"close": close, "off": off}, "close", users)
    assert comp.row("off").metrics["mae"].significant and comp.row("off").metrics["mae"].better is False


def test_a_small_noisy_difference_is_not_significant():
    golds, preds, users = _data("LaMP-2", 12, seed=8, garbage=False)
    comp = stats.paired_bootstrap("LaMP-2", golds, preds, "a", users)
    st = comp.row("b").metrics["accuracy"]
    assert abs(st.diff) < 0.1 and st.diff_ci[0] < 0 < st.diff_ci[1] and not st.significant


# ------------------------------------------------------------------------------------ cluster resampling
def test_cluster_resampling_keeps_a_users_examples_together():
    """One user with 10 examples (all right) and 9 users with one each (all wrong), interleaved.  Drawing k
    times the big user gives accuracy 10k / (10k + 10 - k); resampling examples gives multiples of 1/19."""
    users = ["big"] * 10 + [f"s{i}" for i in range(9)]
    order = random.Random(0).sample(range(19), 19)
    users = [users[i] for i in order]
    golds = ["comedy"] * 19
    preds = ["comedy" if u == "big" else "horror" for u in users]
    by_user = stats.bootstrap_samples("LaMP-2", golds, {"m": preds}, users, resamples=2000).samples["m"]["accuracy"]
    allowed = {round(10 * k / (10 * k + 10 - k), 9) for k in range(11)}
    assert {round(v, 9) for v in by_user} <= allowed
    assert len(set(np.round(by_user, 9))) >= 5
    by_example = stats.bootstrap_samples("LaMP-2", golds, {"m": preds}, None, resamples=2000).samples["m"]["accuracy"]
    assert np.allclose(by_example * 19, np.round(by_example * 19))
    assert not {round(v, 9) for v in by_example} <= allowed
    # the clustered data carry less information than 19 independent examples: wider intervals
    width = lambda x: np.quantile(x, 0.975) - np.quantile(x, 0.025)  # noqa: E731
    assert width(by_user) > 1.3 * width(by_example)


def test_examples_without_user_ids_are_their_own_clusters_and_one_cluster_has_no_interval():
    golds, preds, _ = _data("LaMP-2", 10, seed=2)
    n = len(golds)
    comp = stats.paired_bootstrap("LaMP-2", golds, preds, "a")
    assert comp.unit == "examples" and comp.users == n
    mixed = ["u1", "u1", "u1"] + [None] * (n - 3)
    assert stats.paired_bootstrap("LaMP-2", golds, preds, "a", mixed, resamples=50).users == n - 2
    one = stats.paired_bootstrap("LaMP-2", golds, preds, "a", ["u"] * n, resamples=50)
    st = one.row("b").metrics["accuracy"]
    assert one.users == 1 and st.ci is None and st.diff_ci is None and not st.significant
    assert "no intervals" in stats.caption(one)


def test_seeded_and_fast():
    rng = random.Random(0)
    golds = [rng.choice(LAMP2.labels) for _ in range(1000)]
    preds = {f"m{j}": [g if rng.random() < 0.3 + 0.05 * j else rng.choice(LAMP2.labels) for g in golds] for j in range(8)}
    users = [f"u{i // 3}" for i in range(1000)]
    t0 = time.perf_counter()
    a = stats.paired_bootstrap("LaMP-2", golds, preds, "m0", users)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
    b = stats.paired_bootstrap("LaMP-2", golds, preds, "m0", users)
    assert a.to_json() == b.to_json() and a.resamples == 2000
    c = stats.paired_bootstrap("LaMP-2", golds, preds, "m0", users, seed=1)
    assert c.row("m7").metrics["accuracy"].ci != a.row("m7").metrics["accuracy"].ci


# --------------------------------------------------------------------------------- records and runs
def test_records_are_paired_by_id_and_bad_inputs_are_clear_errors():
    ref = [{"id": str(i), "gold": "comedy", "answer": "comedy", "user_id": f"u{i % 3}"} for i in range(6)]
    other = [{"id": str(i), "gold": "comedy", "answer": "horror"} for i in range(8)]  # 2 extra examples
    comp = stats.compare_records("LaMP-2", {"ref": ref, "other": list(reversed(other))}, "ref", resamples=100)
    assert comp.n == 6 and comp.users == 3 and comp.dropped == {"other": 2}
    assert comp.row("other").metrics["accuracy"].diff == -1.0 and "Unpaired examples left out: other 2" in stats.caption(comp)
    with pytest.raises(stats.StatsError, match="different golds"):
        stats.compare_records("LaMP-2", {"a": ref, "b": [{**r, "gold": "horror"} for r in ref]}, "a")
    with pytest.raises(stats.StatsError, match="share no example"):
        stats.compare_records("LaMP-2", {"a": ref, "b": [{**r, "id": "x" + r["id"]} for r in ref]}, "a")
    with pytest.raises(stats.StatsError, match="no gold"):
        stats.compare_records("LaMP-2", {"a": ref, "b": [{"id": "0", "answer": "comedy"}]}, "a")
    with pytest.raises(stats.StatsError, match="reference 'c'"):
        stats.compare_records("LaMP-2", {"a": ref}, "c")


def _eval_runs(root, p_right):
    """LaMP-2 examples of 30 users (1..4 each) and one evaluation run per name, written by EvalRun itself."""
    rng = random.Random(0)
    exs = [Example(f"{u}-{j}", f"description: film {u}-{j}", [{"description": "x", "tag": "comedy"}], f"u{u}",
                   rng.choice(LAMP2.labels)) for u in range(30) for j in range(1 + u % 4)]
    write_examples(exs, root / "data" / "LaMP_2", LAMP2, "dev")
    for name, p in p_right.items():
        r = random.Random(p)
        answers = {e.input: e.gold if r.random() < p else r.choice([*LAMP2.labels, "no idea"]) for e in exs}
        cfg = EvalConfig(task="LaMP-2", data=str(root / "data"), method="zero-shot", batch_size=16)
        EvalRun(cfg, root / name, backend=FixedBackend(answers)).run(progress=False)
    return exs


def test_run_directories_and_compare_command(tmp_path):
    exs = _eval_runs(tmp_path, {"zero-shot": 0.3, "rag": 0.5, "tagpr: rl exploratory": 0.95})
    cfg, recs = run_records(tmp_path / "rag")
    assert cfg.task == "LaMP-2" and [r["id"] for r in recs] == [e.id for e in exs]
    assert recs[0]["user_id"] == "u0"  # evaluation records carry the user
    comp = stats.compare_run_dirs({n: tmp_path / n for n in ("zero-shot", "rag", "tagpr: rl exploratory")}, "rag")
    assert comp.users == 30 and comp.n == len(exs) == 73
    metrics = json.loads((tmp_path / "rag" / "metrics.json").read_text())
    assert comp.row("rag").metrics["accuracy"].value == pytest.approx(metrics["accuracy"])
    assert comp.row("rag").metrics["mean_reward"].value == pytest.approx(metrics["mean_reward"])

    args = ["compare", str(tmp_path / "zero-shot"), str(tmp_path / "rag"), str(tmp_path / "tagpr: rl exploratory"),
            "--reference", "rag", "--json", str(tmp_path / "c.json")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(x) for x in lines) <= 100
    row = next(x for x in lines if "tagpr: rl exploratory" in x)
    assert "* better" in row and "+0.4" in row
    assert "reference" in next(x for x in lines if "│ rag" in x)
    assert "30 users (73 examples)" in r.stdout
    assert json.loads((tmp_path / "c.json").read_text())["reference"] == "rag"
    # --reference by path, another metric
    r = runner.invoke(app, ["compare", str(tmp_path / "rag"), str(tmp_path / "zero-shot"), "--reference",
                            str(tmp_path / "zero-shot"), "--metric", "f1"])
    assert r.exit_code == 0 and "Δ vs zero-shot" in r.stdout and "f1 [95% CI]" in r.stdout
    # user errors: one line, exit 2, no traceback
    for bad, msg in ((["--reference", "nope"], "not one of the runs"), (["--metric", "mae"], "metric 'mae'"),
                     (["--resamples", "0"], "resamples")):
        r = runner.invoke(app, ["compare", str(tmp_path / "rag"), str(tmp_path / "zero-shot"), *bad])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
        assert r.output.count("error:") == 1 and not r.stdout
    r = runner.invoke(app, ["compare", str(tmp_path / "rag"), str(tmp_path / "data")])
    assert r.exit_code == 2 and "not an evaluation run directory" in " ".join(r.output.split())
    (tmp_path / "rag" / "predictions.json").unlink()
    r = runner.invoke(app, ["compare", str(tmp_path / "rag"), str(tmp_path / "zero-shot")])
    assert r.exit_code == 2 and "not finished" in " ".join(r.output.split())


def test_end_to_end_tables_plot_and_reference(tmp_path):
    """`tagpr run`'s reporting on finished evaluation runs: a tagpr run directory (eval/<row>/), its
    comparison.md with the interval table, comparison.png with error bars, and `tagpr compare RUN`."""
    from tagpr import end_to_end as e2e
    from tagpr import reports

    names = ["zero-shot", "rag", "tagpr: sft", "tagpr: rl guided"]
    _eval_runs(tmp_path / "eval", dict(zip(names, (0.3, 0.5, 0.55, 0.95))))
    assert e2e._reference(None, names) == "rag" and e2e._reference(None, names[2:]) == "tagpr: sft"
    assert e2e._reference("tagpr: sft", names) == "tagpr: sft"
    with pytest.raises(ValueError, match="eval.reference 'rl'"):
        e2e._reference("rl", names)
    assert e2e.EvalSection.model_validate({"reference": "tagpr: sft"}).reference == "tagpr: sft"

    comp = e2e._statistics({n: tmp_path / "eval" / n for n in names}, "rag", seed=0)
    rows = [{**json.loads((tmp_path / "eval" / n / "metrics.json").read_text()), "method": n} for n in names]
    reports.write_markdown_table(tmp_path / "comparison.md", rows, "LaMP-2: every stage", comp)
    md = (tmp_path / "comparison.md").read_text()
    assert "| method | accuracy [95% CI] | Δ vs rag [95% CI] | sig. |" in md
    assert "| rag | " in md and "| reference |" in md and "* better |" in md and "Paired bootstrap over 30 users" in md
    assert "| tagpr: rl guided | 0." in md  # the point-metric table is still there
    reports.plot_comparison(rows, tmp_path / "comparison.png", "LaMP-2", comp)
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    back = stats.Comparison.from_json(json.loads(json.dumps(comp.to_json())))
    assert back.to_json() == comp.to_json()
    (tmp_path / "comparison.json").write_text(json.dumps({"rows": rows[::-1]}))
    r = runner.invoke(app, ["compare", str(tmp_path), "--reference", "rag"])
    assert r.exit_code == 0, r.output
    order = [x.split("│")[1].strip() for x in r.stdout.splitlines() if x.startswith("│")]
    assert order == names[::-1]  # the run's comparison.json order


def test_unit_chooses_what_is_resampled():
    """unit=examples resamples the examples of records that carry user ids (intervals for new questions of these
    users); unit=users needs the ids."""
    golds, preds, _ = _data("LaMP-2", 10, seed=4)
    n = len(golds)
    recs = {m: [{"id": str(i), "gold": g, "answer": p, "user_id": f"u{i % 3}"} for i, (g, p) in enumerate(zip(golds, ps))]
            for m, ps in preds.items()}
    by_user = stats.compare_records("LaMP-2", recs, "a", resamples=500)
    by_example = stats.compare_records("LaMP-2", recs, "a", resamples=500, unit="examples")
    assert (by_user.unit, by_user.users) == ("users", 3) and (by_example.unit, by_example.users) == ("examples", n)
    assert by_example.row("b").metrics["accuracy"].diff_ci != by_user.row("b").metrics["accuracy"].diff_ci
    bare = {m: [{k: v for k, v in r.items() if k != "user_id"} for r in rs] for m, rs in recs.items()}
    with pytest.raises(stats.StatsError, match="no user ids"):
        stats.compare_records("LaMP-2", bare, "a", unit="users")
    with pytest.raises(stats.StatsError, match="unit 'people'"):
        stats.compare_records("LaMP-2", recs, "a", unit="people")
