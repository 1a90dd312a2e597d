"""Where does a rating model's compact chain make its decision, and does RL move it?

    python benchmarks/citation_probe.py EVAL_DIR MODEL_DIR [MODEL_DIR ...]

The compact LaMP-3 chain (``chains.style: compact``) has one decision: the index after
``<identify_patterns>[``, the shown review "most like this one", whose score the answer then copies.  For each
held-out example of a TagPR evaluation (``EVAL_DIR/examples.jsonl``, any of the models' own), this feeds the
prompt and the chain up to that ``[`` to each model and reads the next-token distribution over the shown
indices.  It prints, per model: the mean probability of ``[1]`` (the retriever's first review), and on the
examples where ``[1]``'s score is wrong but another shown review's score is right, the mean probability of a
right index.  A stage that learns the decision raises the last column; one that only sharpens SFT's rule
lowers it.  Greedy evaluation changes once a right index passes ``[1]``.  One forward pass per example and
model: ~3 min per model for 200 examples on 2 CPU cores (run it alone).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tagpr.generation.base import render_prompt
from tagpr.runstate import read_jsonl
from tagpr.tasks import get_task

# a shown LaMP-3 review as the prompt renders it: "[k] " and the task's item template up to the review's text
_HEAD = get_task("LaMP-3").item_template.split("{text}")[0]
SHOWN = re.compile(r"^\[(\d+)\] " + re.escape(_HEAD).replace(re.escape("{score}"), r"(\d)"), re.M)
MARK = "<identify_patterns>["


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    rows = [r for r in read_jsonl(args.eval_dir / "examples.jsonl", required=("prompt", "output", "gold"))
            if MARK in r["output"]]
    print(f"{len(rows)} examples whose chain cites a shown review ({args.eval_dir})")
    print(f"{'model':<48} {'p([1])':>8} {'n':>4} {'p(right index) where [1] is wrong':>34}")
    for path in args.models:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        p_first, p_right = [], []
        for r in rows:
            shown = {int(i): int(s) for i, s in SHOWN.findall(r["prompt"][-1]["content"])}
            ids = [tok.convert_tokens_to_ids(str(i)) for i in sorted(shown)]
            if not shown or any(i is None or i == tok.unk_token_id for i in ids):
                continue
            text = render_prompt(tok, r["prompt"]) + r["output"].split(MARK)[0] + MARK
            with torch.no_grad():
                logits = model(tok(text, return_tensors="pt").input_ids).logits[0, -1]
            probs = dict(zip(sorted(shown), torch.softmax(logits[ids], -1).tolist()))
            p_first.append(probs.get(1, 0.0))
            gold = int(float(r["gold"]))
            right = [i for i, s in shown.items() if s == gold]
            if right and shown.get(1) != gold:
                p_right.append(sum(probs[i] for i in right))
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        print(f"{str(path)[-48:]:<48} {mean(p_first):8.4f} {len(p_right):4d} {mean(p_right):34.4f}")


if __name__ == "__main__":
    main()
