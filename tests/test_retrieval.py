"""Retrievers: BM25 ranking, index reuse, dense, recency (with its error) and random."""

import pytest

from tagpr.data.loading import Example
from tagpr.retrieval import BM25Retriever, RandomRetriever, RecencyRetriever, RetrievalError, make_retriever

PROFILE = [{"text": "I love the beach in summer"}, {"text": "exam week is killing me"},
           {"text": "beach beach beach with friends"}, {"text": "coffee and code"}]
EX = Example("1", "Paraphrase the following tweet: going to the beach", PROFILE)


def test_bm25_ranks_by_term_overlap_and_reuses_index():
    r = BM25Retriever()
    order = r.rank(Example("1", "Paraphrase the following tweet: coffee with friends", PROFILE), "LaMP-7", k=2)
    assert order == [2, 3]  # two rare query terms beat one
    assert r.cache.misses == 1
    # Okapi idf: "beach" is in 2 of 4 items -> idf 0, so the item with "the" wins (as rank_bm25 ranks it)
    assert r.rank(EX, "LaMP-7", k=1) == [0]
    assert r.cache.misses == 1 and r.cache.hits == 1  # same profile -> same index


def test_bm25_agrees_with_rank_bm25_on_clear_cases():
    rank_bm25 = pytest.importorskip("rank_bm25")
    docs = [p["text"] for p in PROFILE]
    ref = rank_bm25.BM25Okapi([d.split() for d in docs]).get_scores("coffee code".split())
    ours = BM25Retriever().scores(docs, "coffee code")
    assert int(ref.argmax()) == int(ours.argmax()) == 3


def test_empty_query_keeps_profile_order():
    assert BM25Retriever().rank(Example("3", "Paraphrase the following tweet:", PROFILE), "LaMP-7") == [0, 1, 2, 3]


def test_recency_needs_dates():
    with pytest.raises(RetrievalError, match=r"example id='1'.*profile\[0\]"):
        RecencyRetriever().rank(EX, "LaMP-7")
    dated = Example("4", "x: y", [{"text": "a", "date": "2019-01-01"}, {"text": "b", "date": "2021-05-03"},
                                  {"text": "c", "date": "2020-12-31"}])
    assert RecencyRetriever().rank(dated, "LaMP-7", k=2) == [1, 2]


def test_random_is_reproducible_per_example():
    r = RandomRetriever(seed=7)
    a, b = r.rank(EX, "LaMP-7", 3), r.rank(EX, "LaMP-7", 3)
    assert a == b and len(set(a)) == 3
    assert sorted(RandomRetriever(seed=7).rank(EX, "LaMP-7")) == [0, 1, 2, 3]


def test_dense_with_packaged_minilm():
    r = make_retriever("dense")
    order = r.rank(Example("5", "Paraphrase the following tweet: studying for my finals", PROFILE), "LaMP-7")
    assert order[0] == 1  # the exam tweet
    n = len(r.cache)
    r.rank(EX, "LaMP-7")
    assert len(r.cache) == n + 1  # only the new query was embedded; items came from the cache


def test_unknown_retriever():
    with pytest.raises(ValueError, match="unknown retriever"):
        make_retriever("tfidf")
