"""Evaluation runs: outputs, official shapes, and resume after a kill without lost or repeated work."""

import json

import pytest

from tagpr.data.loading import write_examples
from tagpr.data.synthetic import generate, profile_aware_rule
from tagpr.evaluation import EvalConfig, EvalRun, RunMismatchError
from tagpr.generation import Generation


class RuleBackend:
    """A deterministic backend that answers with the profile-aware reference rule (for run mechanics)."""

    name = "rule"
    tokenizer = None

    def __init__(self, examples, task):
        self.by_input = {e.input: e for e in examples}
        self.task = task
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += len(prompts)
        out = []
        for p in prompts:
            ex = next(e for inp, e in self.by_input.items() if p.endswith(inp))
            out.append([Generation(profile_aware_rule(self.task, ex), 10, 1)])
        return out


@pytest.fixture
def lamp3(tmp_path):
    exs = generate("LaMP-3", 12, seed=2)
    write_examples(exs, tmp_path / "data" / "LaMP_3", "LaMP-3", "dev")
    return tmp_path, exs


def test_run_writes_official_outputs(lamp3):
    tmp, exs = lamp3
    cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="rag", k=2, batch_size=5)
    res = EvalRun(cfg, tmp / "run", backend=RuleBackend(exs, "LaMP-3")).run(progress=False)
    preds = json.loads((tmp / "run" / "predictions.json").read_text())
    assert preds["task"] == "LaMP_3" and [g["id"] for g in preds["golds"]] == [e.id for e in exs]
    lines = [json.loads(x) for x in (tmp / "run" / "examples.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {"prompt", "output", "answer", "reward", "gold"} <= set(lines[0])
    assert " is the score for " in lines[0]["prompt"]  # the RAG prompt
    assert json.loads((tmp / "run" / "metrics.json").read_text())["mae"] == pytest.approx(res["mae"])
    assert res["mae"] < 0.5 and res["valid_answer_rate"] == 1.0


def test_resume_after_kill_loses_and_repeats_nothing(lamp3):
    tmp, exs = lamp3
    cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="zero-shot", batch_size=5)
    full = EvalRun(cfg, tmp / "full", backend=RuleBackend(exs, "LaMP-3")).run(progress=False)

    class Killed(Exception):
        pass

    def kill_after_first_batch(n_done):
        raise Killed

    b1 = RuleBackend(exs, "LaMP-3")
    with pytest.raises(Killed):
        EvalRun(cfg, tmp / "part", backend=b1).run(progress=False, on_batch=kill_after_first_batch)
    # a write cut short by the kill leaves a partial last line
    with open(tmp / "part" / "examples.jsonl", "a") as fh:
        fh.write('{"id": "half-writ')
    b2 = RuleBackend(exs, "LaMP-3")
    resumed = EvalRun(cfg, tmp / "part", backend=b2).run(progress=False)
    assert b1.calls == 5 and b2.calls == 7  # only the unfinished examples were generated again
    ids = [json.loads(x)["id"] for x in (tmp / "part" / "examples.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(e.id for e in exs) and len(ids) == len(set(ids))
    assert resumed["mae"] == pytest.approx(full["mae"])


def test_resume_refuses_other_settings(lamp3):
    tmp, exs = lamp3
    cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="zero-shot", limit=3)
    EvalRun(cfg, tmp / "r", backend=RuleBackend(exs, "LaMP-3")).run(progress=False)
    other = cfg.model_copy(update={"method": "rag"})
    with pytest.raises(RunMismatchError, match="method"):
        EvalRun(other, tmp / "r", backend=RuleBackend(exs, "LaMP-3")).run(progress=False)
    more = cfg.model_copy(update={"limit": 6})  # a larger limit extends the same run
    b = RuleBackend(exs, "LaMP-3")
    assert EvalRun(more, tmp / "r", backend=b).run(progress=False)["n"] == 6 and b.calls == 3


class TemplateBackend(RuleBackend):
    """Follows RRP's template, answering with the reference rule; section 2 of every other example
    runs on past its budget (so the controller must intervene)."""

    def continue_generation(self, requests, params):
        from tagpr.rrp import SECTIONS

        out = []
        for prompt, partial in requests:
            self.calls += 1
            ex = next(e for inp, e in self.by_input.items() if prompt.endswith("Task: " + inp))
            sec = max(i for i, s in enumerate(SECTIONS) if s.header in partial)
            if sec == len(SECTIONS) - 1:
                out.append([Generation(profile_aware_rule(self.task, ex), 10, 2)])
            elif sec == 1 and int(ex.id.split("-")[-1]) % 2:
                out.append([Generation("words " * params.max_new_tokens, 10, params.max_new_tokens, "length")])
            else:
                out.append([Generation("Some reasoning.\n", 10, 3, "stop", SECTIONS[sec + 1].marker)])
        return out


def test_rrp_method_reports_adherence_and_interventions(lamp3):
    tmp, exs = lamp3
    cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="rrp", k=2, batch_size=4, budgets="20,8,20,4")
    b = TemplateBackend(exs, "LaMP-3")
    res = EvalRun(cfg, tmp / "rrp", backend=b).run(progress=False)
    assert res["method"] == "rrp" and res["template_adherence"] == 1.0 and res["sections_in_order"] == 1.0
    odd = sum(int(e.id.split("-")[-1]) % 2 for e in exs)
    assert res["interventions_per_rule"]["overrun"] == pytest.approx(odd / len(exs))
    assert res["mean_interventions"] == pytest.approx(odd / len(exs))
    assert res["mae"] < 0.5
    rec = json.loads((tmp / "rrp" / "examples.jsonl").read_text().splitlines()[0])
    assert "### 2. User profile" in rec["prompt"] and "[1]" in rec["prompt"] and rec["output"].startswith("### 1.")


def test_rrp_config_errors(lamp3):
    tmp, _ = lamp3
    with pytest.raises(ValueError, match="temperature"):
        EvalConfig(task="LaMP-3", data=str(tmp), method="rrp", candidates=3)
    with pytest.raises(ValueError, match="budgets"):
        EvalConfig(task="LaMP-3", data=str(tmp), method="rrp", budgets="1,2")
    with pytest.raises(ValueError, match="aggregate"):
        EvalConfig(task="LaMP-3", data=str(tmp), method="rrp", aggregate="best")
    cfg = EvalConfig(task="LaMP-3", data=str(tmp), method="rrp", candidates=3, temperature=0.7, aggregate="median")
    assert cfg.label() == "rrp x3 median"


def test_run_releases_the_backend_it_made_and_keeps_a_given_one(lamp3, monkeypatch):
    """A backend the run made (CTranslate2's worker threads, a model's memory) is closed when the run ends, in
    the calling thread; a backend passed in belongs to the caller and stays open."""
    tmp, exs = lamp3
    closed = []

    class Closing(RuleBackend):
        def close(self):
            closed.append(self)

    made = Closing(exs, "LaMP-3")
    monkeypatch.setattr("tagpr.evaluation.make_backend", lambda *a, **k: made)
    cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="rag", k=2, batch_size=5, backend="openai",
                     model="m", base_url="http://localhost:1")
    run = EvalRun(cfg, tmp / "own")
    assert run.run(progress=False)["n"] == 12 and made.calls == 12
    assert closed == [made] and run._backend is None
    given = Closing(exs, "LaMP-3")
    EvalRun(cfg, tmp / "given", backend=given).run(progress=False)
    assert closed == [made] and given.calls == 12


def test_policy_change_counts_changed_outputs_and_answers(lamp3):
    from tagpr.end_to_end import policy_change

    tmp, exs = lamp3
    cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="rag", k=2, batch_size=5)
    EvalRun(cfg, tmp / "a", backend=RuleBackend(exs, "LaMP-3")).run(progress=False)
    EvalRun(cfg, tmp / "same", backend=RuleBackend(exs, "LaMP-3")).run(progress=False)

    class Shifted(RuleBackend):  # the first 3 inputs get another answer, 3 more the same answer in other words
        def generate(self, prompts, params):
            out = super().generate(prompts, params)
            for p, row in zip(prompts, out):
                k = next(i for i, e in enumerate(exs) if p.endswith(e.input))
                ans = row[0].text
                if k < 3:
                    row[0] = Generation("1" if ans != "1" else "5", 10, 1)
                elif k < 6:
                    row[0] = Generation(f" {ans} ", 10, 1)
            return out

    EvalRun(cfg, tmp / "b", backend=Shifted(exs, "LaMP-3")).run(progress=False)
    assert policy_change(tmp / "a", tmp / "same") == {"changed_outputs": 0.0, "changed_answers": 0.0}
    assert policy_change(tmp / "a", tmp / "b") == {"changed_outputs": 0.5, "changed_answers": 0.25}


def test_floor_methods_answer_by_rule_without_a_model(lamp3, tmp_path):
    """copy-input / majority / user-majority are evaluated like methods, from the data alone."""
    from collections import Counter

    from tagpr.data.loading import Example

    tmp, exs = lamp3
    runs = {}
    for m in ("majority", "user-majority"):
        cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method=m)
        run = EvalRun(cfg, tmp / m)
        runs[m] = run.run(progress=False)
        assert run._backend is None  # no model was loaded
    every = Counter(p["score"] for e in exs for p in e.profile).most_common(1)[0][0]
    mine = [Counter(p["score"] for p in e.profile).most_common(1)[0][0] for e in exs]
    golds = [e.gold for e in exs]
    from tagpr.tasks import get_task

    t = get_task("LaMP-3")
    assert runs["majority"]["mae"] == pytest.approx(t.metrics([every] * len(exs), golds)["mae"])
    assert runs["user-majority"]["mae"] == pytest.approx(t.metrics(mine, golds)["mae"])
    assert runs["majority"]["mae"] != pytest.approx(runs["user-majority"]["mae"])

    tweets = [Example(f"t{i}", f"Paraphrase the following tweet without any explanation before or after it: tweet {i}",
                      [{"text": "an old one"}], gold=f"tweet {i} again") for i in range(3)]
    write_examples(tweets, tmp_path / "d7" / "LaMP_7", "LaMP-7", "dev")
    res = EvalRun(EvalConfig(task="LaMP-7", data=str(tmp_path / "d7"), method="copy-input"), tmp_path / "c").run(progress=False)
    assert res["rouge-1"] == pytest.approx(t7_rouge := get_task("LaMP-7").metrics([f"tweet {i}" for i in range(3)],
                                                                                 [e.gold for e in tweets])["rouge-1"])
    assert 0.7 < t7_rouge < 1.0
    with pytest.raises(ValueError, match="copy-input is a floor only for tasks whose input is the text to rewrite"):
        EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="copy-input")
    with pytest.raises(ValueError, match="majority is a floor for label and rating tasks"):
        EvalConfig(task="LaMP-7", data=str(tmp_path / "d7"), method="majority")


def test_metrics_table_fits_100_columns_and_shows_a_task_column_only_for_several_tasks():
    from rich.console import Console

    from tagpr.evaluation import metrics_table

    rows = [{"task": "LaMP-2", "method": m, "n": 200, "accuracy": 0.5625, "f1": 0.4718, "valid_answer_rate": 1.0,
             "tag_validity": 0.9583, "mean_r_tag": 0.9693, "mean_completion_tokens": 176.2}
            for m in ("majority", "tagpr: rl exploratory", "ablation: no-tag-reward")]

    def render(rs, width=100):
        con = Console(width=width, record=True)
        con.print(metrics_table(rs, title="t"))
        return con.export_text()

    one = render(rows)
    def header(text):
        return next(line for line in text.splitlines() if "method" in line)

    assert "task" not in header(one) and "tagpr: rl exploratory" in one and "ablation: no-tag-reward" in one
    assert max(len(line) for line in one.splitlines()) <= 100
    both = render(rows + [{"task": "LaMP-3", "method": "rag", "n": 200, "mae": 2.5, "rmse": 2.9}], width=140)
    assert "task" in header(both) and "LaMP-3" in both


def test_a_users_method_plugs_in_without_touching_the_run(lamp3):
    """A registered Method subclass: its own prompt through a backend, parsed by the task, scored like rag."""
    from tagpr.methods import METHODS, Method, get_method, register_method

    tmp, exs = lamp3

    @register_method
    class Echo(Method):  # shows no profile, asks with its own prompt
        name = "echo-test"
        retrieves = False

        def prompt(self, example, items):
            assert items is None
            return f"Rate it. {example.input}"

    try:
        assert get_method("echo-test") is Echo
        with pytest.raises(ValueError, match="already registered"):
            register_method(type("Other", (Method,), {"name": "echo-test"}))
        cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="echo-test", batch_size=5)
        b = RuleBackend(exs, "LaMP-3")
        res = EvalRun(cfg, tmp / "echo", backend=b).run(progress=False)
        ref = EvalRun(cfg.model_copy(update={"method": "zero-shot"}), tmp / "zs", backend=RuleBackend(exs, "LaMP-3")).run(progress=False)
        assert res["method"] == "echo-test" and res["n"] == 12 and b.calls == 12
        assert res["mae"] == pytest.approx(ref["mae"]) and res["mae"] < 0.5  # the same answers, another prompt
        lines = [json.loads(x) for x in (tmp / "echo" / "examples.jsonl").read_text().splitlines()]
        assert all(r["prompt"].startswith("Rate it. ") for r in lines)
    finally:
        METHODS.pop("echo-test", None)
    with pytest.raises(ValueError, match="method\n  Value error, unknown method 'echo-test'; choose from zero-shot, rag, tagpr, rrp"):
        EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="echo-test")
    # a finished run of a method this process does not know can still be read (tagpr compare, tagpr report)
    from tagpr.evaluation import run_records

    config, records = run_records(tmp / "echo")
    assert config.method == "echo-test" and len(records) == 12


def test_methods_say_what_they_need():
    from tagpr.methods import METHODS

    needs = {name: (m.needs_model, m.retrieves, m.settings != ()) for name, m in METHODS.items()}
    assert needs == {"zero-shot": (True, False, False), "rag": (True, True, False), "tagpr": (True, True, False),
                     "rrp": (True, True, True), "copy-input": (False, False, False), "majority": (False, False, False),
                     "user-majority": (False, False, False)}


def test_overwrite_with_bad_data_keeps_the_existing_run(lamp3):
    """--overwrite reads the inputs first: a wrong --data fails and the finished run is still there."""
    from tagpr.data.loading import LaMPDataError

    tmp, exs = lamp3
    cfg = EvalConfig(task="LaMP-3", data=str(tmp / "data"), method="majority")
    metrics = EvalRun(cfg, tmp / "run").run(progress=False)
    before = {p.name: p.read_bytes() for p in (tmp / "run").iterdir()}
    assert {"examples.jsonl", "metrics.json", "config.json"} <= set(before)
    bad = cfg.model_copy(update={"data": str(tmp / "nowhere")})
    with pytest.raises(LaMPDataError, match="no dev questions"):
        EvalRun(bad, tmp / "run").run(overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp / "run").iterdir()} == before
    assert json.loads((tmp / "run" / "metrics.json").read_text())["mae"] == metrics["mae"]
