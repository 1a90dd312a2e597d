"""tagpr: teach language models to reason about a user before answering (LaMP, TagPR, PRMU, RRP).

The Python API (the ``tagpr`` command is a thin layer over it)::

    import tagpr

    task = tagpr.load_task("LaMP-3")                  # or a task record: tagpr.load_task("my_task.yaml")
    dev = tagpr.load_split("data/lamp", task, "dev")
    metrics = tagpr.evaluate("runs/lamp3-rag", task="LaMP-3", data="data/lamp", method="rag", limit=100)
    tagpr.build_chains("runs/chains", task="LaMP-3", data="data/lamp")          # tagged chains (runs/chains/chains.jsonl)
    tagpr.train_sft(chains=["runs/chains/chains.jsonl"], out="runs/sft")      # or a YAML recipe: train_sft("recipe.yaml")
    tagpr.train_prmu(task="LaMP-3", data="data/lamp", out="runs/prmu")            # or a YAML recipe (prmu: section)
    tagpr.train_rl("recipes/rl_quick.yaml", task="LaMP-3", data="data/lamp", model="runs/sft", prmu="runs/prmu",
                   out="runs/rl")

Every long job writes a resumable run directory (``tagpr.runstate.RunDir``): calling it again resumes it,
``overwrite=True`` starts again.  Methods (``zero-shot``, ``rag``, ``tagpr``, ``rrp``, the floors) are
:class:`Method` classes in a registry; :func:`register_method` adds your own.

Names are imported on first use, so ``import tagpr`` stays light (no torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute" (imported on first access)
_API = {
    # tasks and data
    "load_task": "tagpr.tasks:load_task",
    "load_task_file": "tagpr.tasks:load_task_file",
    "register_task": "tagpr.tasks:register_task",
    "include_path": "tagpr.tasks:include_path",
    "LaMPTask": "tagpr.tasks:LaMPTask",
    "Example": "tagpr.data.loading:Example",
    "load_split": "tagpr.data.loading:load_split",
    "write_examples": "tagpr.data.loading:write_examples",
    "generate_splits": "tagpr.data.synthetic:generate_splits",
    # evaluation and methods
    "evaluate": "tagpr.evaluation:evaluate",
    "EvalConfig": "tagpr.evaluation:EvalConfig",
    "Method": "tagpr.methods:Method",
    "RuleMethod": "tagpr.methods:RuleMethod",
    "RRP": "tagpr.methods:RRP",
    "register_method": "tagpr.methods:register_method",
    "get_method": "tagpr.methods:get_method",
    "compare_run_dirs": "tagpr.stats:compare_run_dirs",
    "make_backend": "tagpr.generation:make_backend",
    # TagPR training
    "build_chains": "tagpr.pipeline.chains:build_chains",
    "train_sft": "tagpr.training.sft:train_sft",
    "train_rl": "tagpr.training.rl:train_rl",
    "train_prmu": "tagpr.prmu.train:train_prmu_recipe",
    "run_recipe": "tagpr.end_to_end:run_recipe",
    # run directories
    "RunDir": "tagpr.runstate:RunDir",
    "read_jsonl": "tagpr.runstate:read_jsonl",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'tagpr' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

