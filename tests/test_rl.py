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


def test_rows_carry_the_columns_the_rewards_read():
    ex = generate_splits("LaMP-2", 3, 2, seed=2)["train"]
    from tagpr.retrieval import BM25Retriever

    rows = rl_rows("LaMP-2", ex, BM25Retriever(), 2)
    assert set(rows[0]) == {"prompt", "gold", "num_items", "input", "profile", "id", "user_id"}
    assert rows[0]["num_items"] == 2 and rows[0]["gold"] == ex[0].gold and "[2]" in rows[0]["prompt"][-1]["content"]
    assert json.loads(rows[0]["profile"]) == ex[0].profile


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
    assert seen_cols and all(c == (2, 2, 2) for c in seen_cols)
    with pytest.raises(ValueError, match="--resume"):
        train_rl(recipe, progress=False, examples=exs, prmu_reward=prmu)
    steps = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            steps.append(state.global_step)

    res = train_rl(recipe, resume=True, callbacks=[Watch()], progress=False, examples=exs, prmu_reward=prmu)
    assert steps == [2, 1]  # guided resumed at step 2 (step 1 not redone), then exploratory's one step
    g, e = res["stages"]
    assert g["resumed_from"].endswith("checkpoint-1") and g["global_step"] == 2 and e["model_in"] == str(guided)
    assert g["weights"] == {"task": 1.0, "tag": 0.5, "prmu": 0.5} and e["weights"] == {"task": 1.0, "tag": 0.0, "prmu": 0.0}
    with open(tmp_path / "rl" / "rewards.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], float(r["step"])) for r in rows] == [("guided", 1.0), ("guided", 2.0), ("exploratory", 1.0)]
    assert {"rewards/task/mean", "rewards/tag/mean", "rewards/prmu/mean", "reward"} <= set(rows[0])
    assert float(rows[0]["rewards/prmu/mean"]) == 0.5
    assert (tmp_path / "rl" / "rewards.png").stat().st_size > 1000
    assert (tmp_path / "rl" / "2-exploratory" / "model.safetensors").exists()
    assert not list((tmp_path / "rl").glob("*/checkpoint-*"))  # finished stages keep their weights, not checkpoints
    again = train_rl(recipe, resume=True, progress=False, examples=exs, prmu_reward=prmu)  # all done: nothing runs
    assert [s["global_step"] for s in again["stages"]] == [2, 1]


@pytest.mark.parametrize("name", ["rl_quick", "rl_qwen7b_lora", "rl_qwen7b_full"])
def test_shipped_rl_recipes_validate(name):
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"
    r = load_rl_recipe(path, {"task": "LaMP-7", "data": "d", "out": "o", "prmu": "p"})
    assert [s.name for s in r.stages] == ["guided", "exploratory"] and r.stages[0].weights["prmu"] == 0.5
    if name != "rl_quick":
        assert r.use_vllm and r.model == "Qwen/Qwen2.5-7B-Instruct" and r.lora == (name == "rl_qwen7b_lora")
    for acc in (path.parent / "accelerate").glob("*.yaml"):
        cfg = yaml.safe_load(acc.read_text())
        assert cfg["distributed_type"] in ("MULTI_GPU", "DEEPSPEED") and cfg["mixed_precision"] == "bf16"
