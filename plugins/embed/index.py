"""Retrieval with FAISS (faiss-cpu): build, search, save and load an index of embeddings; recall@k.

An exact index (``IndexFlatIP`` for cosine and dot product, ``IndexFlatL2`` for Euclidean distance):
the same top-k as brute force, found with FAISS's blocked BLAS search (``benchmarks/embed_vs_st.py``
measures both). For cosine, vectors are L2-normalised on the way in (queries too), so the inner
product is the cosine. Vectors are float32 (N, H); a wrong shape or dimension is a one-line HfxError.
On disk: ``index.faiss`` (FAISS's own binary format, no pickle) and ``index.json`` (metric, dimension,
optional ids), written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hfx.errors import HfxError, did_you_mean
from hfx.io import atomic_dir, atomic_write_json

__all__ = ["INDEX_METRICS", "VectorIndex", "drop_query_texts", "recall_at_k"]

INDEX_METRICS = ("cosine", "dot", "euclidean")


class VectorIndex:
    """An exact FAISS index over ``dim``-dimensional vectors.

    Args:
        dim: Size of each vector.
        metric: cosine, dot or euclidean (scores: cosine and dot are similarities, euclidean is a distance).

    Raises:
        HfxError: an unknown ``metric`` or ``dim`` < 1.
    """

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        import faiss

        if metric not in INDEX_METRICS:
            raise HfxError(f"unknown index metric {metric!r}{did_you_mean(metric, INDEX_METRICS)}; "
                           f"choose one of: {', '.join(INDEX_METRICS)}")
        if dim < 1:
            raise HfxError(f"index dimension must be at least 1, got {dim}")
        self.dim, self.metric = dim, metric
        self.index = faiss.IndexFlatL2(dim) if metric == "euclidean" else faiss.IndexFlatIP(dim)

    @classmethod
    def build(cls, vectors: np.ndarray, metric: str = "cosine") -> VectorIndex:
        """A new index holding ``vectors`` (N, H); their row numbers are their ids.

        Raises:
            HfxError: ``vectors`` is not 2-D, holds NaN/inf, or ``metric`` is unknown.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise HfxError(f"index vectors must be a 2-D array (N, H), got shape {vectors.shape}")
        index = cls(vectors.shape[1], metric)
        index.add(vectors)
        return index

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def _prepare(self, vectors: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]  # one vector -> (1, H)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise HfxError(f"{what} have shape {x.shape} but the index holds {self.dim}-dimensional vectors; "
                           f"embed them with the model that built the index")
        if not np.isfinite(x).all():
            raise HfxError(f"{what} contain NaN or infinite values")
        x = np.ascontiguousarray(x)
        if self.metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (N, H), unit rows
        return x

    def add(self, vectors: np.ndarray) -> None:
        """Append ``vectors`` (N, H); their ids continue from ``len(self)``.

        Raises:
            HfxError: vectors of another width than the index's, or NaN/inf values.
        """
        self.index.add(self._prepare(vectors, "vectors added to the index"))

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query, each (Q, k), best first; ``k`` is capped at the index size.

        Raises:
            HfxError: ``k`` < 1, an empty index, or queries of another width (or NaN/inf).
        """
        if k < 1:
            raise HfxError(f"k must be at least 1, got {k}")
        if len(self) == 0:
            raise HfxError("the index is empty; add vectors before searching")
        q = self._prepare(queries, "queries")
        scores, ids = self.index.search(q, min(k, len(self)))  # (Q, k) each
        if self.metric == "euclidean":
            scores = np.sqrt(np.maximum(scores, 0.0))  # FAISS's L2 index returns squared distances
        return scores, ids

    def save(self, path: str | Path) -> Path:
        """Write the index folder ``path`` atomically (index.faiss + index.json)."""
        import faiss

        path = Path(path)
        with atomic_dir(path) as tmp:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            atomic_write_json(tmp / "index.json", {"metric": self.metric, "dim": self.dim, "size": len(self)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        """Read an index folder written by :meth:`save`.

        Raises:
            HfxError: ``path`` is not an index folder, or its two files disagree on the width.
        """
        import faiss

        path = Path(path)
        if not (path / "index.faiss").is_file() or not (path / "index.json").is_file():
            raise HfxError(f"{path} is not an index folder (index.faiss + index.json); write one with VectorIndex.save")
        meta = json.loads((path / "index.json").read_text())
        out = cls(int(meta["dim"]), str(meta["metric"]))
        out.index = faiss.read_index(str(path / "index.faiss"))
        if out.index.d != out.dim:
            raise HfxError(f"{path}: index.faiss holds {out.index.d}-dimensional vectors, index.json says {out.dim}")
        return out


def drop_query_texts(found: np.ndarray, corpus: Sequence[str], queries: Sequence[str], k: int) -> np.ndarray:
    """The first ``k`` retrieved ids of each query, leaving out documents whose text is the query itself.

    A query found in the corpus always ranks first against itself, which says nothing about retrieval;
    search ``k + 1`` so that ``k`` remain. ``found``: (Q, >= k) ids, -1 for "none" -> (Q, k), -1 padded.
    """
    rows = [([int(i) for i in row if i >= 0 and corpus[i] != q] + [-1] * k)[:k]
            for row, q in zip(np.asarray(found), queries, strict=True)]
    return np.array(rows, dtype=np.int64).reshape(len(rows), k)


def recall_at_k(retrieved: np.ndarray, relevant: Sequence[set[int] | int], k: int) -> float:
    """Mean over queries of |top-k retrieved ∩ relevant| / |relevant| (retrieved ids: (Q, >= k)).

    Raises:
        HfxError: not one row of ids per query, ``k`` < 1, or a query without relevant ids.
    """
    retrieved = np.asarray(retrieved)
    if retrieved.ndim != 2 or len(retrieved) != len(relevant):
        raise HfxError(f"need one row of retrieved ids per query: {retrieved.shape} ids for {len(relevant)} queries")
    if k < 1:
        raise HfxError(f"k must be at least 1, got {k}")
    total = 0.0
    for row, rel in zip(retrieved, relevant, strict=True):
        rel_set = {rel} if isinstance(rel, (int, np.integer)) else set(rel)
        if not rel_set:
            raise HfxError("every query needs at least one relevant id")
        total += len(rel_set & {int(i) for i in row[:k]}) / len(rel_set)
    return total / max(len(relevant), 1)
