"""SFT on tagged chains with TRL (embedded model, a few CPU steps), resume after a kill, model card."""

import json

import pytest

from tagpr.data.loading import write_examples
from tagpr.data.synthetic import generate_splits
from tagpr.pipeline.chains import ChainBuilder, ChainsConfig
from tagpr.training.sft import SFTRecipe, load_recipe, read_chains, sft_rows, train_sft


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    d = tmp_path_factory.mktemp("sft")
    sp = generate_splits("LaMP-3", 24, 4, seed=4)
    write_examples(sp["train"], d / "LaMP_3", "LaMP-3", "train")
    ChainBuilder(ChainsConfig(task="LaMP-3", data=str(d), samples=1, labeller="none", k=2), d / "c.jsonl").run(progress=False)
    return d / "c.jsonl"


def test_rows_put_the_chain_in_the_assistant_turn(chains):
    recs, h = read_chains([chains])
    rows = sft_rows(recs)
    assert len(h) == 16 and rows[0]["completion"][0]["role"] == "assistant"
    assert rows[0]["completion"][0]["content"] == recs[0]["chain"]
    assert "<understand_task>" in rows[0]["prompt"][-1]["content"] and "[1]" in rows[0]["prompt"][-1]["content"]


def test_recipe_yaml_and_overrides(tmp_path):
    (tmp_path / "r.yaml").write_text("sft:\n  max_steps: 7\n  lora: true\n  chains: a.jsonl\n")
    r = load_recipe(tmp_path / "r.yaml", {"out": "o", "max_steps": 3, "lora": None})
    assert r.max_steps == 3 and r.lora and r.chains == ["a.jsonl"] and r.lr == 2e-4
    with pytest.raises(ValueError, match="cannot read"):
        load_recipe(tmp_path / "missing.yaml", {})
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "task": "LaMP-3", "input": "i"}\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 1, example id='x': missing field 'items'"):
        read_chains([tmp_path / "bad.jsonl"])


def test_killed_sft_resumes_from_its_checkpoint(chains, tmp_path):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    recipe = SFTRecipe(chains=[str(chains)], out=str(tmp_path / "ckpt"), max_steps=4, batch_size=2, save_steps=2, lora=True,
                       logging_steps=1, max_length=768, learning_rate=1e-4)
    with pytest.raises(KeyboardInterrupt):
        train_sft(recipe, callbacks=[Kill()], progress=False)
    assert (tmp_path / "ckpt" / "checkpoint-2").is_dir() and not list((tmp_path / "ckpt").glob("*.safetensors"))
    from tagpr.prompts import model_prompt_style  # a checkpoint is prompted as the chains were written

    from tagpr.training.sft import chain_style

    style = chain_style(read_chains([chains])[0])
    assert (tmp_path / "ckpt" / "checkpoint-2" / "tagpr_prompt.json").is_file()
    assert model_prompt_style(tmp_path / "ckpt" / "checkpoint-2") == style
    steps_seen = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps_seen.append(state.global_step)

    summary = train_sft(recipe, callbacks=[Watch()], progress=False)  # resumes by default
    assert summary["resumed_from"].endswith("checkpoint-2") and steps_seen == [3, 4]  # steps 1-2 not redone
    assert summary["global_step"] == 4 and [c["step"] for c in summary["loss_curve"]] == [1, 2, 3, 4]
    out = tmp_path / "ckpt"
    assert (out / "model.safetensors.index.json").exists() and (out / "loss.png").exists()
    assert not list(out.glob("checkpoint-*"))  # a finished run keeps its weights, not its checkpoints (~3x the model)
    card = (out / "README.md").read_text()
    assert summary["chains_sha256_16"] in card and "| 4 |" in card
    # the checkpoint loads and is evaluated with --method tagpr
    from tagpr.evaluation import EvalConfig, EvalRun

    data = chains.parent
    write_examples(generate_splits("LaMP-3", 2, 2, seed=9)["dev"], data / "LaMP_3", "LaMP-3", "dev")
    res = EvalRun(EvalConfig(task="LaMP-3", data=str(data), method="tagpr", k=2, model=str(out), max_new_tokens=48,
                             batch_size=2), tmp_path / "eval").run(progress=False)
    assert res["method"] == "tagpr" and 0.0 <= res["tag_validity"] <= 1.0 and 0.0 <= res["mean_r_tag"] <= 1.0
    rec = json.loads((tmp_path / "eval" / "examples.jsonl").read_text().splitlines()[0])
    assert rec["num_items"] == 2 and "tag_errors" in rec


def test_freeze_lower_layers_stops_gradients_below_layer_n():
    import pytest
    import torch
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tagpr.training.common import freeze_lower_layers, lora_config

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=2,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    emb = model.model.embed_tokens.weight.numel()
    assert freeze_lower_layers(model, 3) == total - emb - 3 * per_layer
    ids = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is None
    assert model.model.layers[3].self_attn.q_proj.weight.grad is not None
    with pytest.raises(ValueError, match="would freeze all 4 layers"):
        freeze_lower_layers(model, 4)
    lora = get_peft_model(LlamaForCausalLM(cfg), lora_config(2, 4, 0.0))
    before = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    after = freeze_lower_layers(lora, 2)
    assert 0 < after < before and after == before // 2  # only the upper half's adapters train


def test_saved_stage_links_the_shards_it_did_not_train_and_never_writes_through_them(tmp_path, monkeypatch):
    """A stage that froze its lower layers keeps one copy of them on disk (hard links to its parent's shards);
    the saved model loads with the trained weights, and saving again into either directory leaves the other intact."""
    import os

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    import tagpr.training.common as common
    from tagpr.training.common import save_final, weight_change

    monkeypatch.setattr(common, "SHARD_SIZE", "8MB")  # the tiny model below, in several shards

    class Tok:
        def save_pretrained(self, out):
            pass

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
    parent = LlamaForCausalLM(cfg)  # 4 MB of embeddings, 4 MB a layer
    save_final(parent, Tok(), tmp_path / "parent", lora=False)
    child = LlamaForCausalLM(cfg)
    child.load_state_dict(parent.state_dict())
    with torch.no_grad():  # "trained": the top layer only
        for p in child.model.layers[-1].parameters():
            p.add_(0.5)
    saved = save_final(child, Tok(), tmp_path / "child", lora=False, parent=tmp_path / "parent")
    shards = sorted((tmp_path / "child").glob("*.safetensors"))
    assert len(shards) >= 2
    linked = [s for s in shards if os.path.samefile(s, tmp_path / "parent" / s.name)]
    assert 0 < len(linked) < len(shards) and saved == sum(s.stat().st_size for s in linked)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "child")
    for (name, a), b in zip(child.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # how far the "training" moved it: read off both directories, linked shards included
    top = list(child.model.layers[-1].parameters())
    saved_tensors = {k: v for k, v in parent.state_dict().items() if k != "lm_head.weight"}  # tied: saved once
    want = (0.25 * sum(p.numel() for p in top)) ** 0.5 / sum(float(v.double().pow(2).sum()) for v in
                                                          saved_tensors.values()) ** 0.5
    moved = weight_change(tmp_path / "child", tmp_path / "parent")
    assert moved["tensors"] == len(saved_tensors) and moved["tensors_changed"] == len(top) == 9
    assert want > 0 and moved["relative_l2"] == pytest.approx(want, rel=1e-6)
    assert weight_change(tmp_path / "parent", tmp_path / "parent")["relative_l2"] == 0.0
    assert weight_change(tmp_path / "child", "HuggingFaceTB/SmolLM2-135M-Instruct") is None  # a hub id
    monkeypatch.setattr(common, "WEIGHT_CHANGE_CHUNK", 1000)  # read in slices of a few rows: the same figure
    assert weight_change(tmp_path / "child", tmp_path / "parent") == pytest.approx(moved, rel=1e-9)
    # saving the parent again (a rerun) must not change the child through the shared files
    with torch.no_grad():
        for p in parent.parameters():
            p.mul_(0.0)
    save_final(parent, Tok(), tmp_path / "parent", lora=False)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "child")
    assert all(torch.equal(a, b) for a, b in zip(child.state_dict().values(), again.state_dict().values()))


def test_weight_change_reads_scalars_and_refuses_other_shapes(tmp_path):
    import torch
    from safetensors.torch import save_file

    from tagpr.training.common import weight_change

    for name, s, m in (("old", 2.0, torch.ones(3, 5)), ("new", 3.0, torch.ones(3, 5) * 1.5),
                       ("odd", 2.0, torch.ones(5, 3))):
        (tmp_path / name).mkdir()
        save_file({"s": torch.tensor(s), "m": m, f"only_{name}": torch.zeros(2)}, tmp_path / name / "model.safetensors")
    want = (1.0 + 15 * 0.25) ** 0.5 / (4.0 + 15.0) ** 0.5
    moved = weight_change(tmp_path / "new", tmp_path / "old")  # "only_*" is in one of the two: not compared
    assert moved == {"relative_l2": pytest.approx(want), "tensors_changed": 2, "tensors": 2}
    assert weight_change(tmp_path / "odd", tmp_path / "old") is None
    (tmp_path / "cut").mkdir()  # a file cut short: logged, None, never an error after a stage has trained
    (tmp_path / "cut" / "model.safetensors").write_bytes((tmp_path / "new" / "model.safetensors").read_bytes()[:40])
    assert weight_change(tmp_path / "cut", tmp_path / "old") is None


def test_resume_passes_over_a_checkpoint_a_kill_cut_short(tmp_path):
    """The Trainer writes trainer_state.json last: a checkpoint without it (a process killed while saving) is not
    resumed from."""
    from tagpr.training.common import checkpoint_step, last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step, complete in ((2, True), (4, True), (6, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert checkpoint_step(last_checkpoint(tmp_path)) == 4


def test_lora_under_zero3_is_refused_before_training():
    """save_trained merges LoRA adapters in memory: DeepSpeed ZeRO-3 leaves each process a shard of the weights."""
    from types import SimpleNamespace

    from tagpr.training.common import check_saveable

    def trainer(stage):
        plugin = None if stage is None else SimpleNamespace(zero_stage=stage)
        return SimpleNamespace(accelerator=SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)))

    with pytest.raises(ValueError, match="ZeRO-3"):
        check_saveable(trainer(3), lora=True)
    check_saveable(trainer(3), lora=False)  # full weights are gathered (accelerate's get_state_dict)
    check_saveable(trainer(2), lora=True)
    check_saveable(trainer(None), lora=True)


def test_a_finished_run_is_returned_only_for_its_own_steps_and_chains(chains, tmp_path):
    """No training: a finished run (summary, no checkpoints) with fewer steps or other chains is refused, not
    returned as if the recipe had been trained."""
    from tagpr.training.sft import finished_differs

    records, digest = read_chains([chains])
    out = tmp_path / "sft"
    out.mkdir()
    summary = {"global_step": 3, "chains_sha256_16": digest, "examples": len(records)}
    (out / "sft_summary.json").write_text(json.dumps(summary))  # a run saved before sft_recipe.json existed
    assert finished_differs(summary, SFTRecipe(chains=[str(chains)], out=str(out), max_steps=3), digest) is None
    assert finished_differs(summary, SFTRecipe(chains=[str(chains)], out=str(out), max_steps=5), "0" * 16) == (
        f"3 steps (max_steps is now 5); other chains (sha256 {digest}, now {'0' * 16})")
    assert train_sft(chains=str(chains), out=str(out), max_steps=3) == summary
    with pytest.raises(ValueError, match=r"holds a finished SFT run with 3 steps \(max_steps is now 5\); use --overwrite"):
        train_sft(chains=str(chains), out=str(out), max_steps=5)
    assert json.loads((out / "sft_summary.json").read_text()) == summary
