"""Profile retrieval: BM25 (bm25s), dense (sentence-transformers), recency and random.

Every retriever ranks one example's profile items for that example's retrieval query (the task's
official rule) and returns item indexes, best first.  Per-user indexes (BM25 matrices, item
embeddings) are built once and kept in a bounded cache keyed by the profile's content, so that
several queries against the same history (time-based splits, RL groups, several k) reuse them.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from tagpr.data.loading import Example
from tagpr.tasks import LaMPTask, get_task


class RetrievalError(ValueError):
    pass


class Retriever(Protocol):
    name: str

    def rank(self, example: Example, task: LaMPTask | str, k: int | None = None) -> list[int]:
        """Indexes into ``example.profile``, best first, at most ``k`` (all when None)."""
        ...


class LRUCache(OrderedDict):
    """A bounded mapping that evicts the least recently used entry and counts hits and misses."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: Any, build: Callable[[], Any]) -> Any:
        if key in self:
            self.hits += 1
            self.move_to_end(key)
            return self[key]
        self.misses += 1
        value = build()
        self.put(key, value)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.maxsize:
            self.popitem(last=False)


def _docs_key(docs: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for d in docs:
        h.update(d.encode("utf-8", "replace"))
        h.update(b"\x00")
    return h.hexdigest()


def _top(scores: np.ndarray, k: int | None) -> list[int]:
    # stable: ties keep profile order
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in (order if k is None else order[:k])]


class BM25Retriever:
    """BM25 over whitespace tokens, as the official LaMP code (rank_bm25 ``BM25Okapi`` on ``str.split``).

    Uses bm25s (sparse matrices).  ``method`` is a bm25s variant; the default ``"robertson"`` is the
    Okapi formula rank_bm25 implements (see ``benchmarks/retrieval_speed.py`` for the measured top-k
    agreement with rank_bm25).
    """

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "robertson", cache_size: int = 4096):
        self.k1, self.b, self.method = k1, b, method
        self.cache = LRUCache(cache_size)

    def _index(self, docs: Sequence[str]):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import and logs every build

        index = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        index.index([d.split() for d in docs], show_progress=False)
        return index

    def scores(self, docs: Sequence[str], query: str) -> np.ndarray:
        index = self.cache.get_or_build(_docs_key(docs), lambda: self._index(docs))
        tokens = query.split()
        if not tokens:
            return np.zeros(len(docs), dtype=np.float32)
        return np.asarray(index.get_scores(tokens), dtype=np.float32)

    def rank(self, example: Example, task: LaMPTask | str, k: int | None = None) -> list[int]:
        t = get_task(task)
        docs = [t.document(item) for item in example.profile]
        return _top(self.scores(docs, t.retrieval_query(example.input)), k)


class DenseRetriever:
    """Cosine similarity of sentence embeddings (default: the packaged all-MiniLM-L6-v2).

    Any sentence-transformers id or path works, e.g. ``facebook/contriever`` (mean pooling; pass
    ``normalize=False`` for its dot-product scoring).  Item embeddings are cached by text.
    """

    name = "dense"

    def __init__(self, model: str | None = None, normalize: bool = True, batch_size: int = 64,
                 device: str | None = None, cache_size: int = 200_000):
        from tagpr.embedded import load_sentence_encoder

        self.encoder = load_sentence_encoder(model, device=device)
        self.normalize = normalize
        self.batch_size = batch_size
        self.cache = LRUCache(cache_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        found = {t: self.cache.get(t) for t in dict.fromkeys(texts)}
        missing = [t for t, v in found.items() if v is None]
        if missing:
            vecs = self.encoder.encode(missing, batch_size=self.batch_size, convert_to_numpy=True,
                                       normalize_embeddings=self.normalize, show_progress_bar=False)
            for t, v in zip(missing, vecs):
                found[t] = v
                self.cache.put(t, v)
        return np.stack([found[t] for t in texts]).astype(np.float32)

    def rank(self, example: Example, task: LaMPTask | str, k: int | None = None) -> list[int]:
        t = get_task(task)
        docs = [t.document(item) for item in example.profile]
        d = self.embed(docs)
        q = self.embed([t.retrieval_query(example.input)])[0]
        return _top(d @ q, k)


_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y/%m/%d", "%m/%d/%Y", "%d %B %Y", "%B %d, %Y")


def parse_date(value: object) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value))
        except (OverflowError, OSError, ValueError):
            return None
    s = str(value).strip()
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        return None


class RecencyRetriever:
    """Most recent items first; needs ``date`` on every profile item (time-based LaMP splits)."""

    name = "recency"

    def rank(self, example: Example, task: LaMPTask | str, k: int | None = None) -> list[int]:
        keys = []
        for j, item in enumerate(example.profile):
            if "date" not in item or item["date"] in (None, ""):
                raise RetrievalError(
                    f"recency retrieval needs a 'date' on every profile item: example id={example.id!r}, "
                    f"profile[{j}] has none (only the time-based LaMP splits carry dates; use bm25/dense/random)"
                )
            d = parse_date(item["date"])
            if d is None:
                raise RetrievalError(f"example id={example.id!r}, profile[{j}].date: unreadable date {item['date']!r}")
            keys.append(d.timestamp())
        return _top(np.asarray(keys, dtype=np.float64), k)


class RandomRetriever:
    """Uniformly random items, reproducible per (seed, example id)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def rank(self, example: Example, task: LaMPTask | str, k: int | None = None) -> list[int]:
        rng = random.Random(f"{self.seed}:{example.id}")
        order = list(range(len(example.profile)))
        rng.shuffle(order)
        return order if k is None else order[:k]


RETRIEVERS: dict[str, Callable[..., Retriever]] = {
    "bm25": BM25Retriever,
    "dense": DenseRetriever,
    "recency": RecencyRetriever,
    "random": RandomRetriever,
}


def make_retriever(name: str, **kwargs: Any) -> Retriever:
    """``bm25`` | ``dense`` | ``recency`` | ``random``; ``dense:MODEL`` picks the encoder."""
    base, _, arg = name.partition(":")
    if base not in RETRIEVERS:
        raise ValueError(f"unknown retriever {name!r}; choose from {', '.join(RETRIEVERS)}")
    if base == "dense" and arg:
        kwargs.setdefault("model", arg)
    return RETRIEVERS[base](**kwargs)


def retrieve(example: Example, task: LaMPTask | str, retriever: Retriever, k: int) -> list[dict[str, Any]]:
    """The top-``k`` profile items of ``example`` (best first)."""
    return [example.profile[i] for i in retriever.rank(example, task, k)]
