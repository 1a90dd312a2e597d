"""PRMU training pairs, Bradley-Terry training with early stopping on held-out users, and evaluation.

Pairs share the user and the input; the positive is the user's gold, negatives are:

* ``other_user``: another user's gold for the most similar input (nearest ``E(x)``);
* ``blind``: a profile-blind output: predictions of a zero-shot run (``--blind-outputs``), else the
  task's profile-blind rule (LaMP-7: the input tweet copied; synthetic tasks: their blind rules);
* ``policy``: optional policy samples that scored below ``policy_max_reward`` on the task metric.

A negative identical to the positive (e.g. the same label) is dropped.  Users are split
deterministically by a hash of their key into train / validation / test.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pydantic import Field, model_validator

from tagpr.data.loading import Example
from tagpr.prmu.model import PRMU, PRMUConfig, TextEmbedder
from tagpr.recipes import StrictModel, load_settings
from tagpr.retrieval import BM25Retriever
from tagpr.runstate import write_json
from tagpr.tasks import LaMPTask, get_task

log = logging.getLogger(__name__)
NEGATIVE_KINDS = ("other_user", "blind", "policy")


def user_split(example: Example, fractions: tuple[float, float] = (0.7, 0.15)) -> str:
    """'train' | 'val' | 'test', stable per user."""
    h = int(hashlib.sha1(example.profile_key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < fractions[0] else "val" if h < fractions[0] + fractions[1] else "test"


def blind_answerer(task: LaMPTask, examples: Sequence[Example]) -> Callable[[Example], str | None]:
    """A profile-blind answer for each example, when no model outputs are given: what the input alone says.
    Labels and ratings: the label-word model of every profile item (``pipeline.teachers.LabelWordModel``) with the
    corpus prior, its most likely label or the median score; generation: the input's own content, copied."""
    if not task.answers.closed:
        return lambda e: task.retrieval_query(e.input)
    from tagpr.pipeline.teachers import RATING_WORDS_WORTH, LabelWordModel

    try:
        model = LabelWordModel.fit(task, examples)
    except ValueError:  # no labelled profile item: no blind negatives
        return lambda e: None
    words_worth = RATING_WORDS_WORTH if task.answers.ordered else None

    def answer(e: Example) -> str | None:
        return task.answers.point_estimate(model.posterior(task.retrieval_query(e.input), words_worth=words_worth))

    return answer


@dataclass
class Pair:
    index: int  # example index
    positive: str
    negative: str
    kind: str


def profile_texts(task: LaMPTask, example: Example, retriever: BM25Retriever, max_items: int) -> tuple[list[str], list[str]]:
    """The example's top profile items by BM25 against its input: (documents, what the user produced)."""
    items = [example.profile[i] for i in retriever.rank(example, task, max_items)] if example.profile else []
    return [task.document(it) for it in items], [task.item_output(it) for it in items]


class EncodedExamples:
    """Frozen-encoder features of examples: their top profile items (BM25 by the input) as keys
    (``E(document)``) and values (``E(output)``), and the input ``E(x)``."""

    def __init__(self, task: LaMPTask, examples: Sequence[Example], embedder: TextEmbedder, max_items: int = 64,
                 progress: bool = False):
        self.task, self.examples, self.embedder = task, list(examples), embedder
        retriever = BM25Retriever()
        per_ex = [profile_texts(task, e, retriever, max_items) for e in self.examples]
        texts = [t for docs, outs in per_ex for t in (*docs, *outs)] + [e.input for e in self.examples]
        embedder.embed(texts, progress=progress)  # one batched pass fills the cache
        self.keys = [embedder.embed(docs) for docs, _ in per_ex]
        self.values = [embedder.embed(outs) for _, outs in per_ex]
        self.x = embedder.embed([e.input for e in self.examples])

    def batch(self, idx: Sequence[int], responses: Sequence[str]) -> tuple[torch.Tensor, ...]:
        n = max(1, max(len(self.keys[i]) for i in idx))
        d = self.x.shape[1]
        keys = np.zeros((len(idx), n, d), dtype=np.float32)
        values = np.zeros((len(idx), n, d), dtype=np.float32)
        mask = np.zeros((len(idx), n), dtype=np.float32)
        for b, i in enumerate(idx):
            k = len(self.keys[i])
            if k:
                keys[b, :k], values[b, :k], mask[b, :k] = self.keys[i], self.values[i], 1
        y = self.embedder.embed(responses)
        return tuple(torch.from_numpy(a) for a in (keys, values, mask, self.x[list(idx)], y))


def build_pairs(task: LaMPTask, enc: EncodedExamples, blind_outputs: Mapping[str, str] | None = None,
                policy_samples: Mapping[str, Sequence[tuple[str, float]]] | None = None,
                policy_max_reward: float = 0.5) -> list[Pair]:
    exs = enc.examples
    blind_rule = blind_answerer(task, exs)
    pairs: list[Pair] = []
    sims = enc.x @ enc.x.T
    np.fill_diagonal(sims, -np.inf)
    for i, e in enumerate(exs):
        if e.gold is None:
            continue
        pos = e.gold
        # (a) another user's gold for the most similar input (first one that differs from ours)
        for j in np.argsort(-sims[i])[:10]:
            other = exs[int(j)]
            if other.profile_key != e.profile_key and other.gold is not None and other.gold.strip() != pos.strip():
                pairs.append(Pair(i, pos, other.gold, "other_user"))
                break
        # (b) a profile-blind output
        blind = (blind_outputs or {}).get(e.id) or blind_rule(e)
        if blind is not None and blind.strip() != pos.strip():
            pairs.append(Pair(i, pos, blind, "blind"))
        # (c) the policy's own low-reward samples
        for text, reward in (policy_samples or {}).get(e.id, ()):
            if reward < policy_max_reward and text.strip() != pos.strip():
                pairs.append(Pair(i, pos, text, "policy"))
    return pairs


def pairwise_accuracy(model: PRMU, enc: EncodedExamples, pairs: Sequence[Pair], zero_user: bool = False,
                      batch_size: int = 256) -> dict[str, float]:
    """Share of pairs where the positive outscores the negative, overall and per negative kind."""
    model.eval()
    hits: dict[str, list[bool]] = defaultdict(list)
    with torch.no_grad():
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s : s + batch_size]
            idx = [p.index for p in chunk]
            keys, values, mask, x, yp = enc.batch(idx, [p.positive for p in chunk])
            yn = torch.from_numpy(enc.embedder.embed([p.negative for p in chunk]))
            sp = model(keys, values, mask, x, yp, zero_user=zero_user)
            sn = model(keys, values, mask, x, yn, zero_user=zero_user)
            for p, ok in zip(chunk, (sp > sn).tolist()):
                hits[p.kind].append(ok)
                hits["all"].append(ok)
    return {k: float(np.mean(v)) for k, v in hits.items()}


# the keys a recipe's ``prmu:`` section may set (train_prmu's settings; the rest come from the run)
PRMU_SECTION_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "user_dropout", "patience", "seed")


class PRMURecipe(StrictModel):
    """Settings of ``tagpr train prmu`` (its ``--config`` recipe's ``prmu:`` section and options).  The training
    settings left None take :func:`train_prmu`'s defaults."""

    task: str
    data: str
    out: str
    split: str = "train"  # its users are divided 70/15/15 into train / validation / test
    blind_outputs: str | None = None  # predictions.json or a zero-shot evaluation run directory
    policy_samples: str | None = None  # JSONL {id, response, reward}
    encoder: str | None = None  # None = the packaged MiniLM
    limit: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    user_dropout: float | None = Field(None, ge=0, lt=1)
    patience: int | None = Field(None, ge=1)
    seed: int | None = None

    @model_validator(mode="after")
    def _task(self) -> "PRMURecipe":
        get_task(self.task)
        return self


def train_prmu_recipe(recipe: PRMURecipe | str | Path | None = None, *, progress: bool = True,
                      **settings: Any) -> dict[str, Any]:
    """:func:`train_prmu` on a split read from disk: ``recipe`` is a :class:`PRMURecipe` or a YAML recipe whose
    ``prmu:`` section is read; ``settings`` (PRMURecipe fields) override it."""
    from tagpr.data.loading import load_split

    r = load_settings(PRMURecipe, recipe, "prmu", settings)
    exs = load_split(r.data, r.task, r.split, require_golds=True)[: r.limit]
    blind = read_blind_outputs(r.blind_outputs) if r.blind_outputs else None
    policy = read_policy_samples(r.policy_samples) if r.policy_samples else None
    training = {k: getattr(r, k) for k in PRMU_SECTION_KEYS if getattr(r, k) is not None}
    return train_prmu(r.task, exs, r.out, blind, policy, PRMUConfig(encoder=r.encoder), progress=progress, **training)


def train_prmu(task: str | LaMPTask, examples: Sequence[Example], out_dir: str | Path,
               blind_outputs: Mapping[str, str] | None = None,
               policy_samples: Mapping[str, Sequence[tuple[str, float]]] | None = None,
               config: PRMUConfig | None = None, epochs: int = 40, batch_size: int = 64, lr: float = 1e-3,
               weight_decay: float = 1e-4, user_dropout: float = 0.2, patience: int = 5, seed: int = 0,
               progress: bool = True) -> dict[str, Any]:
    """Train on the train users, early-stop on validation users, report held-out test users.

    ``user_dropout``: the share of training pairs scored with ``u = 0``, so the head also learns a
    profile-blind fallback and the zeroed-user ablation is a fair non-personal baseline.
    """
    t = get_task(task)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = (config or PRMUConfig()).model_copy(update={"task": t.name})
    embedder = TextEmbedder(cfg.encoder)
    cfg = cfg.model_copy(update={"dim": embedder.dim})
    enc = EncodedExamples(t, examples, embedder, cfg.max_items, progress=progress)
    pairs = build_pairs(t, enc, blind_outputs, policy_samples)
    split_of = [user_split(e) for e in enc.examples]
    by_split = {s: [p for p in pairs if split_of[p.index] == s] for s in ("train", "val", "test")}
    if not by_split["train"] or not by_split["val"]:
        raise ValueError(f"too few examples to split by user ({len(examples)} examples, {len(pairs)} pairs)")
    model = PRMU(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, bad, history = -1.0, None, 0, []
    for epoch in range(epochs):
        model.train()
        train = list(by_split["train"])
        rng.shuffle(train)
        losses = []
        for s in range(0, len(train), batch_size):
            chunk = train[s : s + batch_size]
            keys, values, mask, x, yp = enc.batch([p.index for p in chunk], [p.positive for p in chunk])
            yn = torch.from_numpy(embedder.embed([p.negative for p in chunk]))
            u = model.user_embedding(keys, values, mask, x)
            keep = (torch.rand(len(chunk), 1) >= user_dropout).float()
            u = u * keep
            loss = -F.logsigmoid(model.score_with_user(u, x, yp) - model.score_with_user(u, x, yn)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val = pairwise_accuracy(model, enc, by_split["val"])["all"]
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_accuracy": val})
        if progress:
            log.warning("PRMU epoch %d: loss %.4f, val pairwise accuracy %.4f", epoch + 1, history[-1]["train_loss"], val)
        if val > best + 1e-4:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.save(out_dir)
    metrics = {
        "task": t.name,
        "pairs": {s: {k: sum(p.kind == k for p in ps) for k in NEGATIVE_KINDS} for s, ps in by_split.items()},
        "users": {s: sum(x == s for x in split_of) for s in ("train", "val", "test")},
        "best_val_accuracy": best,
        "epochs_run": len(history),
        "test": pairwise_accuracy(model, enc, by_split["test"]),
        "test_zeroed_user": pairwise_accuracy(model, enc, by_split["test"], zero_user=True),
        "history": history,
    }
    metrics["gap"] = {k: metrics["test"][k] - metrics["test_zeroed_user"].get(k, float("nan")) for k in metrics["test"]}
    write_json(Path(out_dir, "metrics.json"), metrics)
    return metrics


def read_blind_outputs(path: str | Path) -> dict[str, str]:
    """Profile-blind outputs from a predictions.json (official shape) or an eval run directory."""
    from tagpr.data.loading import load_golds

    p = Path(path)
    return load_golds(p / "predictions.json" if p.is_dir() else p)


def read_policy_samples(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """JSONL lines ``{"id", "response", "reward"}`` (e.g. an RL stage's logged samples)."""
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    from tagpr.runstate import iter_jsonl

    for n, rec in iter_jsonl(path, ("id", "response", "reward")):
        try:
            out[str(rec["id"])].append((str(rec["response"]), float(rec["reward"])))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}, line {n}, example id={rec['id']!r}: field 'reward' must be a number ({e})") from None
    return out
