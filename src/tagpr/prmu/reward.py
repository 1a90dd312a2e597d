"""Scoring with a trained PRMU, and the batched reward function for RL.

:class:`PRMUReward` is a plain TRL-style reward callable ``(completions, **columns) -> list[float]``
in [0, 1] (``sigmoid`` of the PRMU score).  It needs the dataset columns ``input`` and ``profile``
(``id`` / ``user_id`` optional); user embeddings are cached per (user, input), so the ``G``
generations of a GRPO group cost one user-embedding pass.  An empty response gets reward 0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tagpr.data.loading import Example
from tagpr.prmu.model import PRMU, TextEmbedder
from tagpr.prmu.train import profile_texts
from tagpr.retrieval import BM25Retriever, LRUCache
from tagpr.scoring import completion_text
from tagpr.tags import final_answer
from tagpr.tasks import get_task


class PRMUScorer:
    def __init__(self, model_dir: str | Path, task: str | None = None, batch_size: int = 256, cache_size: int = 8192):
        self.model = PRMU.load(model_dir)
        cfg = self.model.config
        self.task = get_task(task or cfg.task or "LaMP-7")
        self.embedder = TextEmbedder(cfg.encoder)
        self.retriever = BM25Retriever()
        self.batch_size = batch_size
        self.users = LRUCache(cache_size)  # (user, input) -> (u, E(x))

    @property
    def user_passes(self) -> int:
        """User embeddings computed so far (cache misses)."""
        return self.users.misses

    def _user(self, example: Example) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.get_or_build((example.profile_key, example.input), lambda: self._embed_user(example))

    def _embed_user(self, example: Example) -> tuple[torch.Tensor, torch.Tensor]:
        docs, outputs = profile_texts(self.task, example, self.retriever, self.model.config.max_items)
        if docs:
            keys = torch.from_numpy(self.embedder.embed(docs)).unsqueeze(0)
            values = torch.from_numpy(self.embedder.embed(outputs)).unsqueeze(0)
            mask = torch.ones(1, len(docs))
        else:
            keys = values = torch.zeros(1, 1, self.embedder.dim)
            mask = torch.zeros(1, 1)
        x = torch.from_numpy(self.embedder.embed([example.input]))
        with torch.no_grad():
            u = self.model.user_embedding(keys, values, mask, x)
        return u[0], x[0]

    def score(self, examples: Sequence[Example], responses: Sequence[str], zero_user: bool = False) -> list[float]:
        """Raw PRMU scores (higher = fits this user better), batched."""
        if len(examples) != len(responses):
            raise ValueError(f"{len(examples)} examples for {len(responses)} responses")
        out: list[float] = []
        for s in range(0, len(responses), self.batch_size):
            ex = examples[s : s + self.batch_size]
            users = [self._user(e) for e in ex]
            u = torch.stack([a for a, _ in users])
            x = torch.stack([b for _, b in users])
            y = torch.from_numpy(self.embedder.embed([str(r) for r in responses[s : s + self.batch_size]]))
            if zero_user:
                u = torch.zeros_like(u)
            with torch.no_grad():
                out.extend(self.model.score_with_user(u, x, y).tolist())
        return out

    def rewards(self, examples: Sequence[Example], responses: Sequence[str]) -> list[float]:
        """Rewards in [0, 1]; an empty response scores 0."""
        scores = self.score(examples, responses)
        return [0.0 if not str(r).strip() else float(torch.sigmoid(torch.tensor(s))) for r, s in zip(responses, scores)]


PRMU_CALIBRATIONS = ("group", "sigmoid")


def group_minmax(scores: Sequence[float], keys: Sequence[Any], valid: Sequence[bool] | None = None,
                 tolerance: float = 1e-4) -> list[float]:
    """Each score placed in [0, 1] between the lowest and highest score of its group (a run of consecutive equal
    ``keys``: a GRPO group's completions of one prompt).  Only ``valid`` entries (default: all) set the range and
    are placed; the others get 0.  A group whose valid scores lie within ``tolerance`` (relative to their size:
    batched CPU arithmetic gives one text a few 1e-8 apart in different rows) gets 0.5 for each."""
    ok = list(valid) if valid is not None else [True] * len(scores)
    out = [0.0 if not v else 0.5 for v in ok]
    for a, b in group_runs(keys):
        vals = [scores[i] for i in range(a, b) if ok[i]]
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        if hi - lo > tolerance * max(1.0, abs(hi), abs(lo)):
            for i in range(a, b):
                if ok[i]:
                    out[i] = (scores[i] - lo) / (hi - lo)
    return out


def group_runs(keys: Sequence[Any]) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive equal keys."""
    runs: list[tuple[int, int]] = []
    for i, k in enumerate(keys):
        if runs and keys[runs[-1][0]] == k:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


class PRMUReward:
    """TRL-compatible reward function backed by a PRMU directory.

    ``calibration``: ``sigmoid`` = ``sigmoid`` of the PRMU score (a trained PRMU often gives every answer of a
    group 0.98-0.9998, so the weighted sum hardly tells them apart); ``group`` (the default) = the raw scores
    placed between the lowest (0) and highest (1) of the same prompt's completions, so the PRMU's ranking
    within a GRPO group is what the advantage sees, on the scale of the task reward."""

    def __init__(self, model_dir: str | Path, task: str | None = None, answer_only: bool = True,
                 calibration: str = "group"):
        if calibration not in PRMU_CALIBRATIONS:
            raise ValueError(f"PRMU calibration {calibration!r} is not one of {', '.join(PRMU_CALIBRATIONS)}")
        self.scorer = PRMUScorer(model_dir, task)
        self.answer_only = answer_only
        self.calibration = calibration
        self.__name__ = "prmu"

    def __call__(self, completions: Sequence[Any], input: Sequence[str] | None = None,
                 profile: Sequence[Any] | None = None, id: Sequence[Any] | None = None,
                 user_id: Sequence[Any] | None = None, **_: Any) -> list[float]:
        if input is None or profile is None:
            raise ValueError("the PRMU reward needs the dataset columns 'input' and 'profile'")
        examples = []
        for i, (inp, prof) in enumerate(zip(input, profile)):
            items = json.loads(prof) if isinstance(prof, str) else list(prof or [])
            uid = None if user_id is None else str(user_id[i])
            ex_id = str(id[i]) if id is not None else hashlib.sha1(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
            examples.append(Example(ex_id, str(inp), items, user_id=uid))
        texts = [completion_text(c) for c in completions]
        if self.answer_only:  # the <answer> of a tagged chain, else the parsed text
            texts = [final_answer(t, self.scorer.task) for t in texts]
        if self.calibration == "sigmoid":
            return self.scorer.rewards(examples, texts)
        keys = [(e.input, e.id, e.profile_key) for e in examples]
        first: dict[tuple[Any, str], int] = {}  # one score per distinct (group, text): equal answers score equal
        for i, (k, t) in enumerate(zip(keys, texts)):
            first.setdefault((k, str(t)), i)
        order = list(first.values())
        raw_unique = self.scorer.score([examples[i] for i in order], [texts[i] for i in order])
        by_pair = {pair: v for pair, v in zip(first, raw_unique)}
        raw = [by_pair[(k, str(t))] for k, t in zip(keys, texts)]
        return group_minmax(raw, keys, [bool(str(t).strip()) for t in texts])
