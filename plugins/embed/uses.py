"""What embeddings are for: a similarity matrix, a classification head, clustering.

All functions take float arrays (N, H), as ``Embedder.encode`` returns, and check their shapes with a
one-line HfxError. Clustering is scikit-learn's; the classification head is a linear softmax layer trained
on frozen embeddings (a linear probe, as in SentEval's transfer tasks, Conneau & Kiela 2018,
https://arxiv.org/abs/1803.05449). Similarity quality (Spearman of paired cosines) is :mod:`hfx.metrics`'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hfx.errors import HfxError, did_you_mean

__all__ = ["CLUSTER_METHODS", "METRICS", "EmbeddingClassifier", "cluster", "similarity_matrix"]

METRICS = ("cosine", "dot", "euclidean")
CLUSTER_METHODS = ("kmeans", "agglomerative")


def _matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise HfxError(f"{name} must be a 2-D array (N, H) of embeddings, got shape {x.shape}")
    return x


def similarity_matrix(a: np.ndarray, b: np.ndarray | None = None, metric: str = "cosine") -> np.ndarray:
    """Similarities of every row of ``a`` (N, H) with every row of ``b`` (M, H; default ``a``) -> (N, M).

    ``cosine``: dot product of L2-normalised rows; ``dot``: plain dot product; ``euclidean``: minus the
    Euclidean distance (larger is more similar for every metric, as in sentence-transformers).

    Raises:
        HfxError: an array is not 2-D, the two differ in width H, or ``metric`` is unknown.
    """
    a = _matrix(a, "a")
    b = a if b is None else _matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise HfxError(f"embeddings of different sizes: a has {a.shape[1]} dimensions, b has {b.shape[1]}")
    if metric == "cosine":
        na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # (N, H)
        nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)  # (M, H)
        return na @ nb.T  # (N, M)
    if metric == "dot":
        return a @ b.T  # (N, M)
    if metric == "euclidean":
        # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b; clipped at 0 against rounding below zero
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)  # (N, M)
        return -np.sqrt(np.maximum(sq, 0.0))
    raise HfxError(f"unknown similarity metric {metric!r}{did_you_mean(metric, METRICS)}; choose one of: {', '.join(METRICS)}")


def cluster(embeddings: np.ndarray, n_clusters: int, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Cluster labels (N,) of the rows of ``embeddings`` with scikit-learn's k-means or agglomerative clustering.

    Rows are L2-normalised first, so k-means groups by cosine similarity (the geometry the embeddings are
    trained for); agglomerative clustering uses Ward linkage on the same normalised rows.

    Raises:
        HfxError: ``embeddings`` is not 2-D, ``n_clusters`` is not in [1, N], or ``method`` is unknown.
    """
    x = _matrix(embeddings, "embeddings")
    if not 1 <= n_clusters <= len(x):
        raise HfxError(f"n_clusters must be between 1 and the number of embeddings ({len(x)}), got {n_clusters}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (N, H)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        return AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(x)
    raise HfxError(f"unknown clustering method {method!r}{did_you_mean(method, CLUSTER_METHODS)}; "
                   f"choose one of: {', '.join(CLUSTER_METHODS)}")


@dataclass
class EmbeddingClassifier:
    """A linear softmax classifier on frozen embeddings, trained full-batch with AdamW.

    Attributes:
        epochs: Full-batch optimisation steps.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (L2 regularisation of the head).
        seed: Seed of the head's initial weights.
    """

    epochs: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0

    def fit(self, embeddings: np.ndarray, labels: np.ndarray) -> EmbeddingClassifier:
        """Train the head on ``embeddings`` (N, H) and integer ``labels`` (N,) in 0..C-1; returns self.

        Raises:
            HfxError: not one label per embedding, no embeddings, or a negative label.
        """
        x = torch.from_numpy(_matrix(embeddings, "embeddings"))  # (N, H)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)  # (N,)
        if y.shape != (x.shape[0],):
            raise HfxError(f"need one integer label per embedding: {x.shape[0]} embeddings, labels of shape {tuple(y.shape)}")
        if len(x) == 0 or y.min() < 0:
            raise HfxError("the classifier needs at least one embedding and labels >= 0")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.head = nn.Linear(x.shape[1], int(y.max()) + 1)
        opt = torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        with torch.enable_grad():
            for _ in range(self.epochs):
                loss = nn.functional.cross_entropy(self.head(x), y)  # logits (N, C)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Predicted class (N,) of each row of ``embeddings`` (N, H).

        Raises:
            HfxError: called before :meth:`fit`, or embeddings of another width than the training ones.
        """
        if not hasattr(self, "head"):
            raise HfxError("call fit(embeddings, labels) before predict")
        x = torch.from_numpy(_matrix(embeddings, "embeddings"))
        if x.shape[1] != self.head.in_features:
            raise HfxError(f"the classifier was fit on {self.head.in_features}-dimensional embeddings, got {x.shape[1]}")
        with torch.no_grad():
            return self.head(x).argmax(-1).numpy()  # (N,)
