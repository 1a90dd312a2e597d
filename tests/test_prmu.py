"""PRMU: model shapes and persistence, pair construction, training that learns a personal signal,
the batched reward adapter with its user cache, and bad inputs."""

import json

import pytest
import torch

from tagpr.data.loading import Example, write_examples
from tagpr.data.synthetic import generate
from tagpr.prmu import PRMU, PRMUConfig, PRMUReward, PRMUScorer
from tagpr.prmu.train import build_pairs, train_prmu


def test_model_shapes_empty_profile_and_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = PRMU(PRMUConfig(dim=8, hidden=16, style_dim=3)).eval()
    keys, values, mask = torch.randn(3, 5, 8), torch.randn(3, 5, 8), torch.ones(3, 5)
    mask[2] = 0  # an empty profile
    x, y = torch.randn(3, 8), torch.randn(3, 8)
    u = m.user_embedding(keys, values, mask, x)
    assert u.shape == (3, 24) and torch.all(u[2] == 0)  # (MLP output, pooled, mean)
    s = m(keys, values, mask, x, y)
    assert s.shape == (3,) and torch.isfinite(s).all()
    assert torch.allclose(m(keys, values, mask, x, y, zero_user=True)[2], s[2])  # empty profile == zeroed user
    mask[0, 3:] = 0  # padded items do not count
    a = m.user_embedding(keys, values, mask, x)[0]
    values2 = values.clone()
    values2[0, 3:] = 99.0
    assert torch.allclose(m.user_embedding(keys, values2, mask, x)[0], a)
    m.save(tmp_path)
    m2 = PRMU.load(tmp_path)
    assert torch.allclose(m2(keys, values, mask, x, y), m(keys, values, mask, x, y))
    with pytest.raises(FileNotFoundError, match="not a PRMU directory"):
        PRMU.load(tmp_path / "nope")
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    state["evidence.weight"] = torch.zeros(1, 2)  # the evidence layer of an older layout
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit this version's PRMU \(size mismatch for evidence.weight"):
        PRMU.load(tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A PRMU trained briefly on 120 synthetic LaMP-2 users (mechanics; quality is measured in the notes)."""
    out = tmp_path_factory.mktemp("prmu")
    exs = generate("LaMP-2", 120, seed=4, profile_size=(6, 10))
    metrics = train_prmu("LaMP-2", exs, out / "model", epochs=6, patience=6, progress=False)
    return out / "model", exs, metrics


def test_pairs_cover_negative_kinds(trained):
    _, exs, m = trained
    pairs = m["pairs"]["train"]
    assert pairs["other_user"] > 40 and pairs["blind"] > 15 and pairs["policy"] == 0


def test_policy_pairs_only_below_threshold():
    from tagpr.prmu.model import TextEmbedder
    from tagpr.prmu.train import EncodedExamples
    from tagpr.tasks import get_task

    exs = generate("LaMP-7", 6, seed=1, profile_size=(3, 4))
    enc = EncodedExamples(get_task("LaMP-7"), exs, TextEmbedder())
    samples = {exs[0].id: [("bad answer", 0.1), ("good answer", 0.9)]}
    pairs = [p for p in build_pairs(get_task("LaMP-7"), enc, policy_samples=samples) if p.kind == "policy"]
    assert [(p.index, p.negative) for p in pairs] == [(0, "bad answer")]


def test_training_fits_and_reports(trained):
    model_dir, _, m = trained
    assert (model_dir / "model.safetensors").exists() and json.loads((model_dir / "config.json").read_text())["task"] == "LaMP-2"
    saved = json.loads((model_dir / "metrics.json").read_text())
    assert saved["test"]["all"] == m["test"]["all"]
    hist = m["history"]
    assert len(hist) == m["epochs_run"] == 6 and hist[-1]["train_loss"] < hist[0]["train_loss"] < 0.8
    assert set(m["test"]) == set(m["test_zeroed_user"]) >= {"all", "other_user", "blind"}
    assert m["gap"]["all"] == pytest.approx(m["test"]["all"] - m["test_zeroed_user"]["all"])
    assert m["best_val_accuracy"] == max(h["val_accuracy"] for h in hist)


def test_reward_adapter_batches_and_caches_users(trained):
    model_dir, exs, _ = trained
    reward = PRMUReward(model_dir, "LaMP-2")
    e = exs[0]
    group = ["comedy", "  ", [{"role": "assistant", "content": e.gold}], "action"]
    r = reward(group, input=[e.input] * 4, profile=[json.dumps(e.profile)] * 4, id=[e.id] * 4)
    assert len(r) == 4 and all(0.0 <= v <= 1.0 for v in r) and r[1] == 0.0  # empty response -> 0
    assert reward.scorer.user_passes == 1  # one user embedding for the whole group
    with pytest.raises(ValueError, match="'input' and 'profile'"):
        reward(["x"])


def test_group_calibration_spreads_each_group_over_0_1(trained):
    """The default calibration places each group's raw PRMU scores between 0 (its lowest) and 1 (its highest):
    the order within a group is the sigmoid reward's, and its spread is the task reward's scale."""
    model_dir, exs, _ = trained
    sig, grp = PRMUReward(model_dir, "LaMP-2", calibration="sigmoid"), PRMUReward(model_dir, "LaMP-2")
    a, b = exs[0], exs[1]
    answers = ["comedy", "action", a.gold, "drama", "comedy", "sci-fi", b.gold, "romance"]
    cols = dict(input=[a.input] * 4 + [b.input] * 4, profile=[json.dumps(a.profile)] * 4 + [json.dumps(b.profile)] * 4,
                id=[a.id] * 4 + [b.id] * 4)
    s, g = sig(answers, **cols), grp(answers, **cols)
    for lo, hi in ((0, 4), (4, 8)):
        assert min(g[lo:hi]) == 0.0 and max(g[lo:hi]) == 1.0
        order = sorted(range(lo, hi), key=lambda i: s[i])
        assert sorted(range(lo, hi), key=lambda i: g[i]) == order
    assert max(g) - min(g) > max(s) - min(s)
    one = dict(input=[a.input] * 6, profile=[json.dumps(a.profile)] * 6, id=[a.id] * 6)
    assert grp(["comedy"] * 6, **one) == [0.5] * 6  # one answer six times: no spread, whatever the batch shape
    mixed = grp(["", "comedy", "action", "comedy", "  ", a.gold], **one)
    assert mixed[0] == mixed[4] == 0.0 and mixed[1] == mixed[3]  # empty answers get 0 and set no bound
    assert min(mixed[i] for i in (1, 2, 3, 5)) == 0.0 and max(mixed[i] for i in (1, 2, 3, 5)) in (0.5, 1.0)
    with pytest.raises(ValueError, match="calibration 'logit'"):
        PRMUReward(model_dir, "LaMP-2", calibration="logit")


def test_bad_inputs_have_defined_scores(trained):
    model_dir, exs, _ = trained
    scorer = PRMUScorer(model_dir)
    empty = Example("e", exs[0].input, [])
    s = scorer.score([empty, exs[0], exs[0]], ["comedy", "word " * 50_000, ""])
    assert all(v == v and abs(v) < 1e6 for v in s)
    with pytest.raises(ValueError):
        scorer.score([exs[0]], [])


def test_cli_score(trained, tmp_path):
    from typer.testing import CliRunner

    from tagpr.cli import app

    model_dir, exs, _ = trained
    write_examples(exs, tmp_path / "LaMP_2", "LaMP-2", "dev")
    resp = tmp_path / "r.jsonl"
    resp.write_text("\n".join(json.dumps({"id": e.id, "response": e.gold}) for e in exs[:3]))
    r = CliRunner().invoke(app, ["prmu", "score", "--model", str(model_dir), "--task", "LaMP-2", "--data", str(tmp_path),
                                 "--responses", str(resp)])
    assert r.exit_code == 0, r.output
    assert len([float(x) for x in r.stdout.split()]) == 3
    resp.write_text(json.dumps({"id": "nope", "response": "x"}))
    r = CliRunner().invoke(app, ["prmu", "score", "--model", str(model_dir), "--task", "LaMP-2", "--data", str(tmp_path),
                                 "--responses", str(resp)])
    assert r.exit_code == 2 and "id='nope'" in r.output
