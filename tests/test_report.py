"""`tagpr report RUN_DIR` (tagpr.reports): one self-contained HTML page of a run, on a small run directory written
by the code that writes real ones (EvalRun, ChainBuilder, the RL reward log, the comparison statistics); untrusted
model output and data stay text; headless Chromium renders it without a console message."""

import json
import re
import shutil
import subprocess

import pytest
from fakes import FixedBackend
from typer.testing import CliRunner

from tagpr.cli import app
from tagpr.data.loading import write_examples
from tagpr.data.synthetic import generate_splits
from tagpr.evaluation import EvalConfig, EvalRun
from tagpr.pipeline.chains import ChainBuilder, ChainsConfig
from tagpr.prompts import build_tagpr_messages, shown_items
from tagpr.reports import example_view, write_markdown_table, write_report
from tagpr.stats import compare_run_dirs
from tagpr.training.rl import _write_rows

runner = CliRunner()
XSS = '<script>document.title="pwned";console.error("xss")</script>'
ITEM_XSS = '<img src=x onerror=alert(2)>'


def _chain(cites: str, answer: str, extra: str = "") -> str:
    return ("<think>\n<understand_task>Give the score.</understand_task>\n"
            f"<examine_history>Shown scores: {cites}.{extra}</examine_history>\n"
            "<identify_patterns>[1] is the most similar review.</identify_patterns>\n"
            f"<conclude>The score is {answer}.</conclude>\n</think>\n<answer>{answer}</answer>")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished `tagpr run` directory in miniature: LaMP-3 data, training chains, RL reward log, SFT summary,
    a rag and a TagPR evaluation (one chain carrying a script, one invalid chain), comparison.json / .md."""
    run = tmp_path_factory.mktemp("run")
    splits = generate_splits("LaMP-3", 12, 6, seed=0)
    dev = splits["dev"]
    for item in dev[0].profile:  # untrusted data too
        item["text"] += " " + ITEM_XSS
    data = run / "data" / "LaMP_3"
    write_examples(splits["train"], data, "LaMP-3", "train")
    write_examples(dev, data, "LaMP-3", "dev")
    ChainBuilder(ChainsConfig(task="LaMP-3", data=str(run / "data"), samples=1, labeller="none", style="compact"),
                 run / "chains.jsonl").run(progress=False)

    chains = {e.input: _chain("[1] 3; [2] 4", e.gold) for e in dev}
    chains[dev[0].input] = _chain("[1] 3; [2] 4", dev[0].gold, extra=" " + XSS)
    chains[dev[1].input] = "<think><understand_task>hmm</understand_task></think><answer>3"  # invalid: unclosed, no steps
    chains[dev[2].input] = _chain("[1] 3; [9] 4", dev[2].gold)  # invalid: cites an item not shown
    rows = []
    for label, method, backend in (("rag", "zero-shot", FixedBackend({e.input: "3" for e in dev}, 40, 30)),
                                   ("tagpr: sft", "tagpr", FixedBackend(chains, 40, 30))):
        cfg = EvalConfig(task="LaMP-3", data=str(run / "data"), method=method, batch_size=8)
        res = EvalRun(cfg, run / "eval" / label, backend=backend).run(progress=False)
        rows.append({**res, "method": label})
    stats = compare_run_dirs({r["method"]: run / "eval" / r["method"] for r in rows}, "rag", resamples=200)
    (run / "comparison.json").write_text(json.dumps({"task": "LaMP-3", "data": str(run / "data"), "eval_split": "dev",
                                                     "rows": rows, "statistics": stats.to_json(),
                                                     "seconds": {"sft": 1.5}, "peak_rss_gb": {"sft": 0.5}}))
    write_markdown_table(run / "comparison.md", rows, "LaMP-3: every stage", stats)
    (run / "rl").mkdir()
    _write_rows(run / "rl" / "rewards.csv", [
        {"stage": st, "step": s, "reward": 1.0 + 0.1 * s, "rewards/task/mean": 0.5 + 0.1 * s, "rewards/tag/mean": 0.9,
         "rewards/prmu/mean": 0.5} for st in ("guided", "exploratory") for s in (1, 2, 3)])
    (run / "rl" / "rl_summary.json").write_text(json.dumps({"stages": [
        {"stage": st, "global_step": 3, "weights": {"task": 1.0, "tag": 0.5}, "reward_first_half": {"task": 0.6},
         "reward_second_half": {"task": 0.7},
         "weight_change": {"relative_l2": 5.63e-05, "tensors_changed": 91, "tensors": 272} if st == "guided" else None}
        for st in ("guided", "exploratory")]}))
    (run / "sft").mkdir()
    (run / "sft" / "sft_summary.json").write_text(json.dumps({
        "model": "base", "examples": 12, "global_step": 4, "train_loss": 0.4321,
        "weight_change": {"relative_l2": 0.00494, "tensors_changed": 272, "tensors": 272},
        "loss_curve": [{"step": 2, "loss": 0.9}, {"step": 4, "loss": 0.4}]}))
    return run


@pytest.fixture(scope="module")
def page(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert write_report(run_dir, out) == out
    return out, out.read_text(encoding="utf-8")


def test_report_shows_tables_curves_tags_and_examples(run_dir, page):
    _, html = page
    comp = json.loads((run_dir / "comparison.json").read_text())
    rag, sft = comp["rows"]
    # the interval table (the same cells as comparison.md) and the point metrics
    md = (run_dir / "comparison.md").read_text()
    sft_cells = next(x for x in md.splitlines() if x.startswith("| tagpr: sft | ") and "[" in x).split(" | ")[1:3]
    assert all(c in html for c in sft_cells) and "Paired bootstrap over" in html and "mae [95% CI]" in html
    assert f"{rag['mae']:.4f}" in html and f"{sft['mean_reward']:.4f}" in html and "<th>tag_validity</th>" in html
    # figures: comparison, RL reward curves, SFT loss, tag distribution, all embedded
    assert html.count('src="data:image/svg+xml;base64,') == 4
    assert "<td class=\"method\">guided</td><td>3</td>" in html and "0.4321" in html
    # how far each stage moved the weights (a run from before weight_change shows "-")
    assert "<td>5.63e-05 (91 of 272 tensors)</td></tr>" in html and "<td>-</td></tr>" in html
    assert "weights moved 4.94e-03 (272 of 272 tensors)" in html
    # tag distribution: training chains and the evaluated model's outputs
    assert "training chains" in html and re.search(r"examine_history</td><td>\d+ \(1\.00\)</td>", html)
    # the example browser: both methods, cited items highlighted, tags coloured, the invalid chain flagged
    assert html.count('<details class="method"') == 2
    assert '<li class="cited"><span class="idx">[1]</span>' in html and '<div class="step t-examine_history">' in html
    assert html.count('<span class="badge bad">invalid chain</span>') == 3  # the script chain (unknown tags) too
    assert "no &lt;examine_history&gt; step" in html  # tag_errors of the invalid chain, escaped
    assert "citations name items not shown: [9]" in html and '<span class="cite badcite">[9]</span>' in html
    assert "3 invalid chains" in html


def test_report_escapes_untrusted_text_and_loads_nothing(page):
    _, html = page
    assert "<script" not in html and "<img src=x" not in html and "onerror=alert(2)>" not in html
    assert "&lt;script&gt;document.title=&#34;pwned&#34;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "default-src 'none'" in html  # and the page's policy forbids scripts and any load
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"""<link\b|@import|url\(""", html)


def test_shown_items_reads_back_the_prompt():
    items = [{"text": "great kettle", "score": "5"}, {"text": "awful lamp\n  really", "score": "1"}]
    msgs = build_tagpr_messages("LaMP-3", "review: fine", items, style="compact")
    got, task_input = shown_items(msgs)
    assert got == ['5 is the score for "great kettle"', '1 is the score for "awful lamp really"']
    assert task_input.endswith("review: fine")
    assert shown_items(build_tagpr_messages("LaMP-3", "review: x", None)) == ([], "review: x")
    for junk in (None, 3, "", [{"role": "user"}], [{"role": "user", "content": None}], {"a": 1}):
        assert shown_items(junk)[0] == []
    view = example_view({"id": 1, "prompt": None, "output": None, "tag_valid": False, "tag_errors": None}, "LaMP-3")
    assert view["steps"] == [] and view["correct"] is None and view["tag_valid"] is False


def test_report_command(run_dir, tmp_path):
    out = tmp_path / "pages" / "report.html"
    r = runner.invoke(app, ["report", str(run_dir), "--out", str(out.parent), "--max-examples", "1"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and "The first 1 of 6 examples." in out.read_text(encoding="utf-8")
    for bad, says in ((run_dir / "eval", "not a tagpr run directory"), (tmp_path / "nope", "no such directory")):
        r = runner.invoke(app, ["report", str(bad)])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1


def _chromium():
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_in_headless_chromium(page, tmp_path):
    """The page renders (a non-trivial screenshot) without a console message: no script error, no blocked
    script or load (an escaping bug would show as a Content-Security-Policy violation)."""
    from PIL import Image

    html_path, _ = page
    png = tmp_path / "report.png"
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
                           f"--screenshot={png}", "--window-size=1280,2400", html_path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [x for x in proc.stderr.splitlines() if ":CONSOLE" in x or "Uncaught" in x]
    assert not console, console
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 2400)
    colours = img.getcolors(maxcolors=1 << 20)
    assert png.stat().st_size > 20_000 and (colours is None or len(colours) > 50)
