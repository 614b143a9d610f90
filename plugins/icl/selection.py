"""Choosing the k examples of each query: random (lm-eval's sampler), first-n, label-balanced, or kNN (KATE).

    idx = select_examples(pool_texts, query_texts, k=8, method="knn")   # one list of pool indices per query

- ``random``: lm-eval's ``ContextSampler``: one ``random.Random(seed)`` shared by all queries, in query
  order, each drawing ``rnd.sample(pool, k)`` (the pool is another split, so no query is removed from it).
  With the same seed and order, the examples are exactly lm-eval's.
- ``first_n``: lm-eval's ``FirstNSampler``: the first k rows, the same for every query.
- ``balanced``: the same number per label (the remainder to the labels that come first in a seeded order),
  drawn with the same shared generator, then shuffled. lm-eval declares a ``BalancedSampler`` but leaves it
  unimplemented.
- ``knn``: KATE (Liu et al. 2021, https://arxiv.org/abs/2101.06804): the k pool texts nearest to the query by
  cosine similarity of sentence embeddings (``minilm`` through ``hfx.embed``), ordered with the nearest
  last, next to the query (the paper's "reversed" order). lm-eval has no kNN sampler.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hfx.errors import HfxError
from hfx_plugins.icl.config import SELECTIONS

__all__ = ["embed_texts", "select_examples"]

Embed = Callable[[list[str]], Any]


def embed_texts(texts: Sequence[str], embedder: str | Embed = "minilm") -> np.ndarray:
    """Unit-length sentence embeddings (N, H) float32, by an offline model name/folder or a callable."""
    if isinstance(embedder, str):
        import hfx

        emb = np.asarray(hfx.embed(embedder).encode(list(texts)), dtype=np.float32)  # (N, H)
    else:
        emb = np.asarray(embedder(list(texts)), dtype=np.float32)  # (N, H)
    if emb.ndim != 2 or len(emb) != len(texts):
        raise HfxError(f"the embedder returned shape {emb.shape} for {len(texts)} texts; it must return (N, H)")
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _balanced(rnd: random.Random, by_label: dict[Any, list[int]], k: int) -> list[int]:
    labels = list(by_label)
    rnd.shuffle(labels)  # which labels get the remainder when k is not a multiple
    want = {lab: k // len(labels) + (i < k % len(labels)) for i, lab in enumerate(labels)}
    picked = [i for lab in labels for i in rnd.sample(by_label[lab], want[lab])]
    rnd.shuffle(picked)
    return picked


def select_examples(
    pool: Sequence[str],
    queries: Sequence[str],
    k: int,
    method: str = "random",
    seed: int = 1234,
    labels: Sequence[Any] | None = None,
    embedder: str | Embed = "minilm",
) -> list[list[int]]:
    """Indices into ``pool`` of the k examples of each query, in prompt order.

    Args:
        pool: Texts the examples come from (N,) (a train split; never the queries' own split).
        queries: Query texts (Q,), in evaluation order (the random generator advances per query, as lm-eval's).
        k: Examples per query; 0 gives empty lists.
        method: ``random``, ``first_n``, ``balanced`` or ``knn`` (see the module docstring).
        seed: Seed of ``random`` and ``balanced`` (lm-eval's default few-shot seed is 1234).
        labels: Label of each pool row (N,), needed by ``balanced``.
        embedder: For ``knn``: an offline model name/folder for ``hfx.embed`` or texts -> (N, H) array.

    Returns:
        Q lists of k pool indices.

    Raises:
        HfxError: an unknown method, k larger than the pool (or than a label's rows for ``balanced``), or
            ``balanced`` without labels.
    """
    if method not in SELECTIONS:
        raise HfxError(f"unknown example selection {method!r}; choose one of {', '.join(SELECTIONS)}")
    if k < 0:
        raise HfxError(f"k must be >= 0, got {k}")
    if k > len(pool):
        raise HfxError(f"k={k} examples asked for but the pool holds only {len(pool)}; lower icl.num_fewshot "
                       "or give a larger pool (train split)")
    if k == 0:
        return [[] for _ in queries]
    rnd = random.Random(seed)
    if method == "random":
        return [rnd.sample(range(len(pool)), k) for _ in queries]
    if method == "first_n":
        return [list(range(k)) for _ in queries]
    if method == "balanced":
        if labels is None or len(labels) != len(pool):
            raise HfxError("balanced selection needs one label per pool row (labels=...)")
        by_label: dict[Any, list[int]] = {}
        for i, lab in enumerate(labels):
            by_label.setdefault(lab, []).append(i)
        need = -(-k // len(by_label))  # ceil: the most any one label must give
        short = {lab: len(rows) for lab, rows in by_label.items() if len(rows) < need}
        if short:
            raise HfxError(f"balanced selection of k={k} needs {need} rows per label, but label(s) {short} have fewer")
        return [_balanced(rnd, by_label, k) for _ in queries]
    pool_emb, query_emb = embed_texts(pool, embedder), embed_texts(queries, embedder)  # (N, H), (Q, H)
    sims = query_emb @ pool_emb.T  # (Q, N) cosine similarities
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (Q, k), nearest first
    return [row[::-1].tolist() for row in nearest]  # nearest last: next to the query
