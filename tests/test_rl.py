"""TagPR RL: reward functions (values, never raising), recipes and ablations, and a tiny GRPO run on the
embedded model that is killed mid-stage and resumes."""

import csv
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagpr.data.synthetic import generate_splits
from tagpr.training.rewards import TagReward, TaskReward, reward_functions
from tagpr.training.rl import RLRecipe, ablate, load_rl_recipe, rl_rows, train_rl

GOOD = ("<think>\n<understand_task>Pick the genre.</understand_task>\n<examine_history>[1] and [2] are comedies."
        "</examine_history>\n<identify_patterns>Mostly comedy.</identify_patterns>\n<conclude>comedy</conclude>\n"
        "</think>\n<answer>comedy</answer>")


def test_task_and_tag_rewards_score_the_chain_and_its_answer():
    task, tag = TaskReward("LaMP-2"), TagReward("LaMP-2")
    conv = [{"role": "assistant", "content": GOOD}]  # TRL's conversational completion
    assert task([GOOD, conv, "action", "<answer>fantasy</answer>"], gold=["comedy", "comedy", "action", "comedy"]) == [1.0, 1.0, 1.0, 0.0]
    assert tag([GOOD, GOOD, "action"], num_items=[2, 1, 2]) == [1.0, 0.875, 0.0]  # [2] not shown with 1 item: half the citations bad
    three = TaskReward("LaMP-3")([GOOD.replace("comedy", "4"), "<answer>2</answer>"], gold=["5", "5"])
    assert three == [0.75, 0.25]
    with pytest.raises(ValueError, match="column 'gold'"):
        task([GOOD])


def test_label_similarity_gives_near_misses_partial_credit():
    """With the packaged MiniLM: "dark comedy" is nearer "comedy" than "violence" is; exact hits keep 1, answers
    outside the label space 0, and ratings are untouched (they are dense already)."""
    exact, dense = TaskReward("LaMP-2"), TaskReward("LaMP-2", label_similarity=0.5)
    answers = ["<answer>comedy</answer>", "<answer>dark comedy</answer>", "<answer>violence</answer>", "cartoon"]
    gold = ["comedy"] * 4
    assert exact(answers, gold=gold) == [1.0, 0.0, 0.0, 0.0]
    r = dense(answers, gold=gold)
    assert r[0] == 1.0 and r[3] == 0.0 and 0.5 >= r[1] > r[2] >= 0.0 and r[1] > 0.2
    for bad in (("LaMP-2", 1.0), ("LaMP-3", 0.5), ("LaMP-1", 0.5)):  # out of range; a rating task; 2 labels
        with pytest.raises(ValueError, match="label_similarity"):
            TaskReward(*bad)


def test_reward_set_aligns_names_and_weights():
    funcs, weights = reward_functions("LaMP-2", {"task": 1.0, "tag": 0.5})
    assert [f.__name__ for f in funcs] == ["task", "tag"] and weights == [1.0, 0.5]

    def prmu(completions, input, profile, **_):
        return [0.5] * len(completions)

    funcs, weights = reward_functions("LaMP-2", {"task": 1.0}, prmu_reward=prmu)
    assert [f.__name__ for f in funcs] == ["task", "tag", "prmu"] and weights == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="no PRMU model"):
        reward_functions("LaMP-2", {"task": 1.0, "prmu": 0.5})
    with pytest.raises(ValueError, match="unknown reward"):
        reward_functions("LaMP-2", {"style": 1.0})


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=400), st.lists(st.dictionaries(st.sampled_from(["role", "content"]), st.text(max_size=50)),
                                                    max_size=2), st.none(), st.integers()),
       st.sampled_from(["LaMP-1", "LaMP-2", "LaMP-3", "LaMP-7"]), st.integers(-3, 10), st.text(max_size=20))
def test_rewards_never_raise_and_stay_in_unit_range(completion, task, k, gold):
    for r in (TaskReward(task)([completion], gold=[gold]), TagReward(task)([completion], num_items=[k])):
        assert len(r) == 1 and 0.0 <= r[0] <= 1.0


def test_recipe_validation_yaml_and_ablations(tmp_path):
    base = {"task": "LaMP-2", "data": "d", "out": "o"}
    with pytest.raises(ValueError, match="multiple of num_generations"):
        RLRecipe(**base, batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="loss_type 'ppo'"):
        RLRecipe(**base, loss_type="ppo")
    with pytest.raises(ValueError, match="no PRMU model"):
        RLRecipe(**base).check_prmu()  # the default guided stage weights PRMU
    ablate(RLRecipe(**base), no_prmu=True).check_prmu()  # --no-prmu takes the weight away
    with pytest.raises(ValueError, match="no PRMU model"):
        train_rl(RLRecipe(**base), examples=generate_splits("LaMP-2", 2, 2, seed=1)["train"])
    (tmp_path / "r.yaml").write_text("rl:\n  task: LaMP-2\n  data: d\n  prmu: p\n  max_steps: 9\n  loss_type: grpo\n")
    r = load_rl_recipe(tmp_path / "r.yaml", {"out": "o", "max_steps": 2, "beta": None})
    assert r.max_steps == 2 and r.loss_type == "grpo" and [s.name for s in r.stages] == ["guided", "exploratory"]
    assert r.stages[0].weights == {"task": 1.0, "tag": 0.5, "prmu": 0.5}
    a = ablate(r, no_tag_reward=True, no_prmu=True)
    assert a.prmu is None and a.stages[0].weights == {"task": 1.0, "tag": 0.0} and len(a.stages) == 2
    assert [s.name for s in ablate(r, no_exploratory=True).stages] == ["guided"]
    assert [s.name for s in ablate(r, only=["exploratory"]).stages] == ["exploratory"]
    with pytest.raises(ValueError, match="no stage named"):
        ablate(r, only=["warmup"])
    guided = [{"name": "guided", "weights": {"task": 1.0}, "guide": 1}]
    with pytest.raises(ValueError, match="gives no guide_chains"):
        RLRecipe(**base, stages=guided)
    with pytest.raises(ValueError, match="at least one sampled completion"):
        RLRecipe(**base, stages=[{**guided[0], "guide": 4}], guide_chains="c.jsonl")
    assert RLRecipe(**base, stages=guided, guide_chains="c.jsonl").stages[0].guide == 1
    faithful = [{"name": "guided", "weights": {"task": 1.0, "faithful": 1.0}}]  # for chains that rewrite the input
    with pytest.raises(ValueError, match="weights it: the faithful reward checks.*not LaMP-2's"):
        RLRecipe(**base, stages=faithful)
    assert RLRecipe(**{**base, "task": "LaMP-7"}, stages=faithful).stages[0].weights["faithful"] == 1.0
    # a run goes on whichever engine samples its rollouts (ct2 before an upgrade, openvino after); not its lr
    assert RLRecipe(**base, rollout_engine="ct2").identity() == RLRecipe(**base, rollout_engine="auto").identity()
    assert RLRecipe(**base).identity() != RLRecipe(**base, learning_rate=1e-4).identity()
    with pytest.raises(ValueError, match="needs rollout_engine ct2"):  # TRL's own generate cannot take the chains
        train_rl(RLRecipe(**base, stages=guided, guide_chains="c.jsonl", rollout_engine="trainer"),
                 examples=generate_splits("LaMP-2", 2, 2, seed=1)["train"])
    with pytest.raises(FileNotFoundError, match=r"c.jsonl: no such chains file \(guide_chains\)"):  # before any work
        train_rl(RLRecipe(**base, stages=guided, guide_chains=str(tmp_path / "c.jsonl")),
                 examples=generate_splits("LaMP-2", 2, 2, seed=1)["train"])


class _Engine:
    """Stands in for the CTranslate2 backend: records the sample count and returns numbered completions."""

    def __init__(self, tok):
        self.tokenizer, self.calls = tok, []

    def load_weights(self, model, seed=None):
        pass

    def sample_ids(self, prompts, params, logprobs=False):
        self.calls.append((len(prompts), params.n) + (("greedy",) if params.greedy else ()))
        if params.greedy:  # 900 + prompt: the policy's own answer
            return [[([900 + j], [-0.1], "eos")] for j in range(len(prompts))]
        return [[([100 + j, 100 + h], [-0.5, -0.5], "length") for h in range(params.n)] for j in range(len(prompts))]


def test_guided_rollouts_put_the_teachers_chain_in_each_whole_group():
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from tagpr.embedded import resolve_lm
    from tagpr.training.rollouts import EngineRollouts, guide_completions, prompt_key

    tok = AutoTokenizer.from_pretrained(resolve_lm(None))
    a, b = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]
    records = [{"p": a, "chain": "<answer>x</answer>"}, {"p": a, "chain": "<answer>y</answer>"},
               {"p": b, "chain": "too long " * 50}]
    guides = guide_completions(records, lambda r: r["p"], tok, max_tokens=20)
    assert list(guides) == [prompt_key(a)] and len(guides[prompt_key(a)]) == 2  # b's chain is over the limit
    assert guides[prompt_key(a)][0][-1] == tok.eos_token_id  # a chain ends its turn, as SFT taught it
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=3), accelerator=SimpleNamespace(process_index=0,
                              unwrap_model=lambda m: m), model=None, chat_template_kwargs=None,
                              args=SimpleNamespace(seed=0, max_completion_length=20, temperature=1.0, top_p=1.0,
                                                   num_generations=4))
    engine = _Engine(tok)
    roll = EngineRollouts(engine, guides=guides, guide=1)
    out = roll([a] * 4 + [a] * 4, trainer)  # two whole groups of a guided prompt: 3 samples + the teacher each
    assert engine.calls[-1] == (2, 3)
    assert len(out["completion_ids"]) == 8 and len(out["prompt_ids"]) == 8
    teacher = [ids for ids in out["completion_ids"] if ids[0] < 100]
    assert len(teacher) == 2 and teacher[0] in guides[prompt_key(a)] and out["completion_ids"][3] == teacher[0]
    assert len(out["logprobs"][3]) == len(teacher[0]) and all(x != x for x in out["logprobs"][3])  # NaN: unknown
    out = roll([a] * 4 + [b] * 4, trainer)  # b has no chain: its group is sampled whole, a's gets its chain
    assert engine.calls[-2:] == [(1, 4), (1, 3)] and len(out["completion_ids"]) == 8
    assert out["completion_ids"][3] in guides[prompt_key(a)] and all(ids[0] >= 100 for ids in out["completion_ids"][4:])
    trainer.args.num_generations = 8  # this process holds half of each group: no guidance
    roll([a] * 4, trainer)
    assert engine.calls[-1] == (1, 4)
    assert roll.stats()["guided_groups"] == 3 and roll.stats()["groups"] == 5


def test_greedy_rollouts_put_the_policys_greedy_answer_first_in_each_whole_group():
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from tagpr.embedded import resolve_lm
    from tagpr.training.rollouts import EngineRollouts, guide_completions, prompt_key

    tok = AutoTokenizer.from_pretrained(resolve_lm(None))
    a, b = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0), accelerator=SimpleNamespace(process_index=0,
                              unwrap_model=lambda m: m), model=None, chat_template_kwargs=None,
                              args=SimpleNamespace(seed=0, max_completion_length=20, temperature=0.7, top_p=1.0,
                                                   num_generations=4))
    engine = _Engine(tok)
    out = EngineRollouts(engine, greedy=True)([a] * 4 + [b] * 4, trainer)
    assert engine.calls == [(2, 1, "greedy"), (2, 3)]  # one greedy decoding per group, 3 samples each
    ids = out["completion_ids"]
    assert len(ids) == 8 and ids[0] == [900] and ids[4] == [901]  # the greedy answer opens its own group
    assert ids[1:4] == [[100, 100], [100, 101], [100, 102]] and ids[5][0] == 101
    # with a teacher chain too: greedy + 2 samples + the chain
    guides = guide_completions([{"p": a, "chain": "<answer>x</answer>"}], lambda r: r["p"], tok, max_tokens=20)
    engine.calls.clear()
    out = EngineRollouts(engine, guides=guides, guide=1, greedy=True)([a] * 4, trainer)
    assert engine.calls == [(1, 1, "greedy"), (1, 2)] and out["completion_ids"][0] == [900]
    assert out["completion_ids"][3] == guides[prompt_key(a)][0]
    trainer.args.num_generations = 8  # this process holds half of each group: plain samples
    engine.calls.clear()
    EngineRollouts(engine, greedy=True)([a] * 4, trainer)
    assert engine.calls == [(1, 4)]
    base = dict(task="LaMP-2", data="d", out="o", num_generations=2, batch_size=2)
    assert RLRecipe(**base, stages=[{"name": "g", "weights": {"task": 1.0}, "greedy": True}]).stages[0].greedy
    with pytest.raises(ValueError, match="guide 1 and the greedy completion must leave at least one sampled"):
        RLRecipe(**base, guide_chains="c.jsonl", stages=[{"name": "g", "weights": {"task": 1.0}, "guide": 1,
                                                         "greedy": True}])
    with pytest.raises(ValueError, match="greedy: true needs rollout_engine ct2 or openvino"):
        train_rl(RLRecipe(**{**base, "num_generations": 4, "batch_size": 4}, rollout_engine="trainer",
                          stages=[{"name": "g", "weights": {"task": 1.0}, "greedy": True}]),
                 examples=generate_splits("LaMP-2", 2, 2, seed=1)["train"])


def test_spread_log_records_the_mean_within_group_spread_per_call():
    from tagpr.training.rewards import SpreadLog

    log = SpreadLog()

    def task(completions, **_):
        return [float(c) for c in completions]

    f = log.wrap(task)
    assert f.__name__ == "task"
    prompts = [[{"role": "user", "content": "a"}]] * 2 + [[{"role": "user", "content": "b"}]] * 2
    assert f(["0", "1", "1", "1"], prompts=prompts) == [0.0, 1.0, 1.0, 1.0]  # values pass through
    f(["0", "0", "0", "0"], prompts=prompts)
    assert log.pop() == {"spread/task": pytest.approx((0.25 + 0.0) / 2)}  # group stds 0.5, 0 -> 0.25; then 0
    assert log.pop() == {}
    f(["1", "0"], input=["x", "x"])  # without prompts, the input column groups
    assert log.pop() == {"spread/task": 0.5}
    sized = SpreadLog(group_size=2)  # TRL's num_generations: consecutive blocks, even for duplicate prompts
    sized.wrap(task)(["0", "1", "1", "1"], prompts=["same"] * 4)
    assert sized.pop() == {"spread/task": pytest.approx(0.25)}
    greedy = SpreadLog(group_size=2, greedy_first=True)  # each group's first completion is the greedy one
    greedy.wrap(task)(["0", "1", "1", "1"], prompts=["same"] * 4)
    assert greedy.pop() == {"spread/task": pytest.approx(0.25), "greedy/task": pytest.approx(0.5)}


def test_rows_carry_the_columns_the_rewards_read():
    ex = generate_splits("LaMP-2", 3, 2, seed=2)["train"]
    from tagpr.retrieval import BM25Retriever

    rows = rl_rows("LaMP-2", ex, BM25Retriever(), 2)
    assert set(rows[0]) == {"prompt", "gold", "num_items", "input", "shown", "profile", "id", "user_id"}
    assert rows[0]["num_items"] == 2 and rows[0]["gold"] == ex[0].gold and "[2]" in rows[0]["prompt"][-1]["content"]
    assert json.loads(rows[0]["profile"]) == ex[0].profile
    # the shown items' outputs, in the prompt's order (the faithful reward checks a chain's claims against them)
    order = BM25Retriever().rank(ex[0], "LaMP-2", 2)
    assert json.loads(rows[0]["shown"]) == [ex[0].profile[i]["tag"] for i in order]


def test_killed_rl_resumes_mid_stage_and_runs_the_next_stage_from_its_weights(tmp_path):
    from transformers import TrainerCallback

    exs = generate_splits("LaMP-2", 6, 2, seed=3)["train"]
    seen_cols = []

    def prmu(completions, input, profile, user_id, **_):  # stands in for PRMUReward: same columns
        seen_cols.append((len(completions), len(input), len(profile)))
        return [0.5] * len(completions)

    recipe = RLRecipe(task="LaMP-2", data="unused", out=str(tmp_path / "rl"), prmu="fake", k=2, batch_size=2,
                      num_generations=2, max_completion_length=8, save_steps=1, max_steps=1,
                      stages=[{"name": "guided", "weights": {"task": 1.0, "tag": 0.5, "prmu": 0.5}, "max_steps": 2},
                              {"name": "exploratory", "weights": {"task": 1.0}}])

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_rl(recipe, callbacks=[Kill()], progress=False, examples=exs, prmu_reward=prmu)
    guided = tmp_path / "rl" / "1-guided"
    assert (guided / "checkpoint-1").is_dir() and not (guided / "stage.json").exists()
    assert (guided / "checkpoint-1" / "tagpr_prompt.json").is_file()  # `tagpr eval` prompts a checkpoint as trained
    assert seen_cols and all(c == (2, 2, 2) for c in seen_cols)
    with pytest.raises(ValueError, match=r"holds an RL run with other settings \{'k': \(2, 3\)\}"):
        train_rl(recipe, progress=False, examples=exs, prmu_reward=prmu, k=3)
    steps = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps.append(state.global_step)

    res = train_rl(recipe, callbacks=[Watch()], progress=False, examples=exs, prmu_reward=prmu)  # resumes by default
    assert steps == [2, 1]  # guided resumed at step 2 (step 1 not redone), then exploratory's one step
    g, e = res["stages"]
    assert g["resumed_from"].endswith("checkpoint-1") and g["global_step"] == 2 and e["model_in"] == str(guided)
    assert g["weights"] == {"task": 1.0, "tag": 0.5, "prmu": 0.5} and e["weights"] == {"task": 1.0, "tag": 0.0, "prmu": 0.0}
    # 8-token completions earn no task or tag reward and the PRMU stand-in is constant: every group has zero
    # variance and is dropped, so neither stage may move a weight (read back from the saved safetensors)
    assert g["weight_change"] == e["weight_change"] == {"relative_l2": 0.0, "tensors_changed": 0, "tensors": 272}
    with open(tmp_path / "rl" / "rewards.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], float(r["step"])) for r in rows] == [("guided", 1.0), ("guided", 2.0), ("exploratory", 1.0)]
    assert {"rewards/task/mean", "rewards/tag/mean", "rewards/prmu/mean", "reward"} <= set(rows[0])
    assert float(rows[0]["rewards/prmu/mean"]) == 0.5
    assert float(rows[0]["spread/prmu"]) == 0.0 and 0.0 <= float(rows[0]["spread/task"]) <= 0.5  # within-group
    assert (tmp_path / "rl" / "rewards.png").stat().st_size > 1000
    assert (tmp_path / "rl" / "2-exploratory" / "model.safetensors.index.json").exists()
    assert not list((tmp_path / "rl").glob("*/checkpoint-*"))  # finished stages keep their weights, not checkpoints
    again = train_rl(recipe, progress=False, examples=exs, prmu_reward=prmu)  # all done: nothing runs
    assert [s["global_step"] for s in again["stages"]] == [2, 1]


@pytest.mark.parametrize("name", ["rl_quick", "rl_qwen7b_lora", "rl_qwen7b_full", "quickstart", "lamp3_real",
                                  "lamp7_real"])
def test_shipped_rl_recipes_validate(name):
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"
    r = load_rl_recipe(path, {"task": "LaMP-7", "data": "d", "out": "o", "prmu": "p"})
    assert [s.name for s in r.stages] == ["guided", "exploratory"] and r.stages[0].weights["prmu"] == 0.5
    if name.endswith("_real") or name == "quickstart":  # end-to-end recipes: every section validates
        from tagpr.end_to_end import EvalSection, RunSection
        from tagpr.training.sft import SFTRecipe

        raw = yaml.safe_load(path.read_text())
        run = RunSection.model_validate({**raw["run"], "data": "DIR" if name != "quickstart" else None})
        assert run.train_from == ("profiles" if name != "quickstart" else "split")
        SFTRecipe.model_validate({**raw["sft"], "chains": ["c"], "out": "o"})
        EvalSection.model_validate(raw["eval"])
        return
    if name != "rl_quick":
        assert r.use_vllm and r.model == "Qwen/Qwen2.5-7B-Instruct" and r.lora == (name == "rl_qwen7b_lora")
    for acc in (path.parent / "accelerate").glob("*.yaml"):
        cfg = yaml.safe_load(acc.read_text())
        assert cfg["distributed_type"] in ("MULTI_GPU", "DEEPSPEED") and cfg["mixed_precision"] == "bf16"


def test_cpu_lm_head_scores_the_completion_tokens_only_with_the_same_log_probs(monkeypatch):
    """On the CPU, TRL's fused LM head projects every position (prompt included); the switch makes it project the
    labelled (completion) positions only, as on CUDA, with the same log-probabilities and gradients."""
    import torch
    import trl.trainer.utils as trl_utils
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from tagpr.training.common import score_completions_only_on_cpu

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    ids = torch.randint(0, 300, (3, 20))
    labels = ids.clone()
    labels[:, :14] = -100  # a 14-token prompt, 6 completion tokens
    seen: list[int] = []
    kernel = trl_utils._ChunkedLogProbFunction
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction",
                        type("Counting", (), {"apply": staticmethod(lambda h, *a: seen.append(h.shape[0]) or kernel.apply(h, *a))}))

    def run():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), model.model.layers[1].mlp.up_proj.weight.grad.clone()

    from trl.kernels.chunked_logprob import _use_triton as trl_own

    monkeypatch.setattr(trl_utils, "_use_triton", trl_own)  # TRL's own switch (an earlier RL run switched it)
    lp_all, grad_all = run()
    assert score_completions_only_on_cpu() and score_completions_only_on_cpu()  # idempotent
    lp_compact, grad_compact = run()
    assert seen == [3 * 19, 3 * 6]  # every shifted position, then the completion tokens only
    mask = labels[:, 1:] != -100
    assert torch.allclose(lp_all[mask], lp_compact[mask], atol=1e-5) and (lp_compact[~mask] == 0).all()
    assert torch.allclose(grad_all, grad_compact, atol=1e-5)


def test_shared_prompt_pass_gives_the_padded_pass_log_probs_and_gradients():
    """Each group's prompt forwarded once (a KV cache repeated for its completions) scores the completions as
    TRL's padded full-sequence pass does, with the same gradients, whatever the left padding and order."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from tagpr.training.common import freeze_lower_layers
    from tagpr.training.grpo import grouped_logps_and_entropies, prompt_groups

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    freeze_lower_layers(model, 1)
    long, short = torch.randint(1, 300, (12,)), torch.randint(1, 300, (7,))
    pad = torch.zeros(5, dtype=torch.long)
    prompts = torch.stack([long, torch.cat([pad, short]), long, torch.cat([pad, short]), long])  # interleaved groups
    pmask = torch.stack([torch.ones(12), torch.cat([torch.zeros(5), torch.ones(7)])] * 2 + [torch.ones(12)]).long()
    comp = torch.randint(1, 300, (5, 6))
    cmask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0], [1] * 6, [1] * 2 + [0] * 4])
    ids, mask = torch.cat([prompts, comp], 1), torch.cat([pmask, cmask], 1)
    assert prompt_groups(prompts, pmask) == [[0, 2, 4], [1, 3]]

    def grads():
        g = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad()
        return g

    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :12] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    ref_lp, ref_ent = out.log_probs[:, -6:], out.entropy[:, -6:]
    (ref_lp * cmask).sum().backward()
    ref_g = grads()
    lp, ent = grouped_logps_and_entropies(model, ids, mask, 6, compute_entropy=True)
    (lp * cmask).sum().backward()
    g = grads()
    on = cmask.bool()
    assert torch.allclose(lp[on], ref_lp[on], atol=1e-5) and torch.allclose(ent[on], ref_ent[on], atol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g, ref_g)) and len(g) > 0


def test_zero_variance_groups_are_found_from_the_advantages():
    import torch

    from tagpr.training.grpo import informative_rows

    adv = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.5, -0.5, 0.0])
    groups = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert informative_rows(adv, groups) == [4, 5, 6, 7, 8, 9, 10, 11]  # a group with one zero row is kept whole
    assert informative_rows(torch.zeros(4), [[0, 1], [2, 3]]) == []
    assert informative_rows(adv.clamp(min=0), groups, rows_alone=True) == [4, 9]  # positive-only: reinforced rows


def test_positive_only_zeroes_negative_advantages_and_trains_on_the_reinforced_rows():
    """negative_advantages: zero. The rows below their group's mean get advantage 0 and leave the training pass;
    the loss is normalised over the reinforced rows' tokens. keep (GRPO) leaves the advantages as they are."""
    import types

    import torch

    from tagpr.training.grpo import tagpr_grpo_trainer

    adv = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0])  # a group with one right answer, one all-equal
    prompt = torch.tensor([[1, 2, 3]] * 4 + [[4, 5, 6]] * 4)

    class FakeTRL:  # what TRL's _generate_and_score_completions hands over, and the attributes read around it
        def __init__(self):
            self.model = types.SimpleNamespace(training=True)
            self.args = types.SimpleNamespace(steps_per_generation=1)
            self.beta, self.loss_type = 0.0, "dapo"
            self.accelerator = types.SimpleNamespace(gather=lambda t: t)
            self._metrics = {"train": {"zero_variance/dropped": []}}

        def _generate_and_score_completions(self, inputs):
            return {"advantages": adv.clone(), "prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt),
                    "completion_mask": torch.tensor([[1, 1, 1, 0]] * 8), "completion_ids": torch.arange(8)[:, None]}

    out = tagpr_grpo_trainer(FakeTRL, positive_only=True)()._generate_and_score_completions(None)
    assert out["advantages"].tolist() == [1.5] and out["completion_ids"].flatten().tolist() == [0]
    assert int(out["num_items_in_batch"]) == 3
    grpo = tagpr_grpo_trainer(FakeTRL)()
    out = grpo._generate_and_score_completions(None)
    assert out["advantages"].tolist() == [1.5, -0.5, -0.5, -0.5] and int(out["num_items_in_batch"]) == 12
    assert grpo._metrics["train"]["zero_variance/dropped"] == [0.5]


def test_curriculum_keeps_the_prompts_the_policy_sometimes_solves(tmp_path):
    from tagpr.generation import Generation
    from tagpr.training.curriculum import screen_rows, stage_rows

    # gold "comedy" everywhere; "mixed" answers comedy and action, "solved" always comedy, "lost" always action
    kinds = ["mixed", "solved", "lost", "mixed", "solved", "lost", "lost", "mixed"]
    rows = [{"prompt": [{"role": "user", "content": k}], "gold": "comedy", "id": str(i)} for i, k in enumerate(kinds)]
    calls = []

    def generate(prompts, params):
        calls.append((len(prompts), params.n))
        answers = {"mixed": ["comedy", "action"], "solved": ["comedy"], "lost": ["action"]}
        return [[Generation(f"<answer>{answers[p[0]['content']][j % len(answers[p[0]['content']])]}</answer>", 5, 2)
                 for j in range(params.n)] for p in prompts]

    kept, rep = screen_rows(rows, "LaMP-2", generate, samples=4, pool=8, min_rows=2)
    assert calls == [(8, 4)] and sorted(r["id"] for r in kept) == ["0", "3", "7"]
    assert rep["informative"] == 3 and rep["always_solved"] == 2 and rep["never_solved"] == 3
    kept, rep = screen_rows(rows, "LaMP-2", generate, samples=4, pool=8, min_rows=5)  # too few: nearest 0.5 follow
    assert len(kept) == 5 and {r["id"] for r in kept[:3]} == {"0", "3", "7"} and rep["kept"] == 5
    kept, rep = screen_rows(rows, "LaMP-2", generate, samples=2, pool=3, min_rows=1, seed=1)
    assert rep["screened"] == 3 and calls[-1] == (3, 2)

    fake_generate = generate

    class Backend:
        generate = staticmethod(fake_generate)
        closed = 0

        def close(self):
            Backend.closed += 1

    made = []
    first, _ = stage_rows(rows, tmp_path / "s", "LaMP-2", "m", samples=4, pool=8, min_rows=1, temperature=1.0,
                          max_new_tokens=16, seed=0, make=lambda m: made.append(m) or Backend())
    again, rep = stage_rows(rows, tmp_path / "s", "LaMP-2", "m", samples=4, pool=8, min_rows=1, temperature=1.0,
                            max_new_tokens=16, seed=0, make=lambda m: made.append(m) or Backend())
    assert made == ["m"] and Backend.closed == 1 and first == again  # a resumed stage reads curriculum.json
    assert (tmp_path / "s" / "curriculum.json").exists() and rep["informative"] == 3
    with pytest.raises(ValueError, match="at least 2 samples"):
        screen_rows(rows, "LaMP-2", generate, samples=1)


def test_run_builds_the_teachers_chains_for_the_rl_examples_and_rl_reads_them(tmp_path):
    """`tagpr run` with a guided stage: the chains section's teacher writes chains for the RL examples
    (run.rl_offset, run.rl_limit) into RUN/guide/, and every RL prompt finds its chain there."""
    from transformers import AutoTokenizer

    from tagpr.data.loading import load_split
    from tagpr.embedded import resolve_lm
    from tagpr.end_to_end import RunPaths, RunSection, _chains, _data
    from tagpr.retrieval import BM25Retriever
    from tagpr.tasks import get_task
    from tagpr.training.rl import _guides
    from tagpr.training.rollouts import prompt_key

    run = RunSection(task="LaMP-2", synthetic_train_users=12, synthetic_dev_users=2, rl_offset=8, rl_limit=3)
    paths = RunPaths(tmp_path / "run")
    data_dir, _ = _data(run, "LaMP-2", paths)
    section = {"teacher": "analytic", "style": "compact", "samples": 1, "k": 2, "limit": 8}
    _chains(section, run, "LaMP-2", data_dir, paths, progress=False)
    _chains(section, run, "LaMP-2", data_dir, paths, progress=False, rl=True)
    train = load_split(data_dir, get_task("LaMP-2"), "train", require_golds=True)
    guide = [json.loads(line) for line in paths.guide.read_text().splitlines()]
    sft = [json.loads(line) for line in paths.chains.read_text().splitlines()]
    ids = {g["id"] for g in guide}
    assert ids == {e.id for e in train[8:11]} and not ids & {s["id"] for s in sft}
    recipe = RLRecipe(task="LaMP-2", data=str(data_dir), out="o", k=2, offset=8, limit=3, prompt_style="compact",
                      guide_chains=str(paths.guide), stages=[{"name": "guided", "weights": {"task": 1.0}, "guide": 1}])
    guides = _guides(recipe, AutoTokenizer.from_pretrained(resolve_lm(None)))
    rows = rl_rows("LaMP-2", train[8:11], BM25Retriever(), 2, style="compact")
    assert all(prompt_key(r["prompt"]) in guides for r in rows)


def test_a_guided_stage_trains_with_the_teachers_chain_in_every_group(tmp_path):
    """One GRPO step of a guided stage through TRL: every group gets the chain of its prompt, and the stage says so."""
    from tagpr.retrieval import make_retriever, retrieve
    from tagpr.tasks import get_task

    t = get_task("LaMP-2")
    exs = generate_splits("LaMP-2", 4, 2, seed=5)["train"]
    chains = tmp_path / "guide.jsonl"
    with open(chains, "w") as f:
        for e in exs:
            items = retrieve(e, t, make_retriever("bm25"), 2)
            f.write(json.dumps({"id": e.id, "task": "LaMP-2", "input": e.input, "items": items,
                                "chain": GOOD.replace("comedy", str(e.gold))}) + "\n")
    recipe = RLRecipe(task="LaMP-2", data="unused", out=str(tmp_path / "rl"), k=2, batch_size=2, num_generations=2,
                      max_completion_length=96, max_steps=1, save_steps=1, guide_chains=str(chains),
                      stages=[{"name": "guided", "weights": {"task": 1.0, "tag": 0.5}, "guide": 1}])
    res = train_rl(recipe, progress=False, examples=exs)
    (stage,) = res["stages"]
    assert stage["rollout_engine"] == recipe.engine() in ("openvino", "ct2") and stage["global_step"] == 1
    assert stage["guided_groups"] == stage["groups"] == 1  # one prompt a step, its chain beside one sample
    with open(tmp_path / "rl" / "rewards.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["rewards/task/mean"]) >= 0.5  # the teacher's chain answers the gold
