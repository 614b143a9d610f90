"""Similarity matrix (and hfx.metrics.paired_cosine vs sentence-transformers), clustering, classification
head, and the FAISS index with recall@k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hfx.errors import HfxError
from hfx.metrics import paired_cosine
from hfx_plugins.embed.index import VectorIndex, drop_query_texts, recall_at_k
from hfx_plugins.embed.uses import EmbeddingClassifier, cluster, similarity_matrix

RNG = np.random.default_rng(0)
# Three well separated directions in 8-d, 10 noisy points around each.
CENTRES = np.eye(8, dtype=np.float32)[:3] * 5
POINTS = np.concatenate([c + 0.3 * RNG.standard_normal((10, 8)).astype(np.float32) for c in CENTRES])
LABELS = np.repeat([0, 1, 2], 10)


def test_similarity_matrix_by_hand_and_vs_sentence_transformers() -> None:
    from sentence_transformers.util import cos_sim

    a = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    assert similarity_matrix(a) == pytest.approx(np.array([[1, 2**-0.5], [2**-0.5, 1]]), abs=1e-6)
    assert similarity_matrix(a, metric="dot") == pytest.approx(np.array([[1, 1], [1, 2]]))
    assert similarity_matrix(a, metric="euclidean") == pytest.approx(np.array([[0, -1], [-1, 0]]), abs=1e-6)
    # Expected: sentence-transformers' util.cos_sim on the same vectors.
    ref = cos_sim(torch.from_numpy(POINTS), torch.from_numpy(POINTS[:5])).numpy()
    assert np.abs(similarity_matrix(POINTS, POINTS[:5]) - ref).max() <= 1e-6
    assert np.abs(paired_cosine(POINTS[:5], POINTS[5:10]) - np.diag(ref[5:10])).max() <= 1e-6


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_clustering_recovers_separated_groups(method: str) -> None:
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(LABELS, cluster(POINTS, 3, method)) == 1.0


def test_classifier_head_learns_separated_groups() -> None:
    head = EmbeddingClassifier().fit(POINTS[0::2], LABELS[0::2])
    assert (head.predict(POINTS[1::2]) == LABELS[1::2]).mean() == 1.0


def test_uses_bad_input() -> None:
    with pytest.raises(HfxError, match="unknown similarity metric 'cosin'"):
        similarity_matrix(POINTS, metric="cosin")
    with pytest.raises(HfxError, match="different sizes: a has 8 dimensions, b has 4"):
        similarity_matrix(POINTS, POINTS[:, :4])
    with pytest.raises(HfxError, match="n_clusters must be between 1 and"):
        cluster(POINTS, 100)
    with pytest.raises(HfxError, match="unknown clustering method"):
        cluster(POINTS, 3, "dbscan")
    with pytest.raises(HfxError, match="fit on 8-dimensional embeddings, got 4"):
        EmbeddingClassifier(epochs=1).fit(POINTS, LABELS).predict(POINTS[:, :4])


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_index_matches_brute_force_and_round_trips(metric: str, tmp_path: Path) -> None:
    corpus = RNG.standard_normal((200, 16)).astype(np.float32)
    queries = RNG.standard_normal((7, 16)).astype(np.float32)
    index = VectorIndex.build(corpus, metric)
    scores, ids = index.search(queries, k=5)
    sims = similarity_matrix(queries, corpus, "dot" if metric == "dot" else metric)  # brute force (7, 200)
    expected = np.argsort(-sims, axis=1)[:, :5]
    assert (ids == expected).all()
    ref_scores = np.take_along_axis(sims, expected, 1)
    assert np.abs(scores - (-ref_scores if metric == "euclidean" else ref_scores)).max() <= 1e-4
    loaded = VectorIndex.load(index.save(tmp_path / "idx"))
    assert len(loaded) == 200 and loaded.metric == metric
    assert (loaded.search(queries, k=5)[1] == ids).all()


def test_recall_at_k_by_hand() -> None:
    retrieved = np.array([[3, 1, 2], [0, 5, 4]])
    # query 0: relevant {1} found at rank 2; query 1: relevant {4, 9}: one of two found at rank 3.
    assert recall_at_k(retrieved, [1, {4, 9}], k=1) == 0.0
    assert recall_at_k(retrieved, [1, {4, 9}], k=2) == 0.5
    assert recall_at_k(retrieved, [1, {4, 9}], k=3) == pytest.approx((1 + 0.5) / 2)


def test_query_texts_are_not_their_own_answers() -> None:
    # Worked by hand: query "b" is document 1 of the corpus; its list keeps the order of the others.
    corpus = ["a", "b", "c", "d"]
    found = np.array([[1, 2, 0], [0, 3, 1], [3, -1, -1]])  # (Q=3, k+1=3), -1 = nothing found
    ids = drop_query_texts(found, corpus, ["b", "x", "d"], k=2)
    assert ids.tolist() == [[2, 0], [0, 3], [-1, -1]]
    assert recall_at_k(ids, [2, 3, 0], k=1) == pytest.approx(1 / 3)


def test_index_bad_input(tmp_path: Path) -> None:
    index = VectorIndex(16)
    with pytest.raises(HfxError, match="the index is empty"):
        index.search(np.zeros(16, dtype=np.float32))
    with pytest.raises(HfxError, match=r"have shape \(3, 8\) but the index holds 16-dimensional vectors"):
        index.add(np.zeros((3, 8), dtype=np.float32))
    index.add(np.ones((3, 16), dtype=np.float32))
    with pytest.raises(HfxError, match="queries have shape"):
        index.search(np.zeros((1, 15), dtype=np.float32))
    with pytest.raises(HfxError, match="NaN"):
        index.add(np.full((1, 16), np.nan, dtype=np.float32))
    with pytest.raises(HfxError, match="unknown index metric"):
        VectorIndex(16, "cos")
    with pytest.raises(HfxError, match="is not an index folder"):
        VectorIndex.load(tmp_path)
    assert index.search(np.ones(16, dtype=np.float32), k=10)[1].shape == (1, 3)  # k capped at the size
