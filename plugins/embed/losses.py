"""Training losses on sentence embeddings (tensors in, scalar out), as in sentence-transformers.

Each takes embeddings (B, H) that still carry gradients and returns the batch mean. They are written
from the formulas; ``hfx validate plugin=embed`` and the tests compare their values and gradients with
sentence-transformers' ``CosineSimilarityLoss``, ``TripletLoss`` and ``MultipleNegativesRankingLoss`` on
the same embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hfx.errors import HfxError

__all__ = ["cos_sim", "cosine_similarity_loss", "mnrl_loss", "pairwise_cos", "triplet_loss"]


def pairwise_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a_i, b_i) for rows of a, b (B, H) -> (B,). Each row is divided by max(norm, 1e-12) first."""
    return (F.normalize(a, p=2, dim=-1) * F.normalize(b, p=2, dim=-1)).sum(dim=-1)  # (B,)


def cos_sim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All-pairs cosine similarity: a (N, H), b (M, H) -> (N, M)."""
    return F.normalize(a, p=2, dim=-1) @ F.normalize(b, p=2, dim=-1).T  # (N, H) @ (H, M)


def _same_rows(*tensors: torch.Tensor) -> None:
    rows = {t.shape[0] for t in tensors}
    if len(rows) != 1:
        raise HfxError(f"the loss got columns of different sizes {sorted(rows)}; every column needs one row per example")


def cosine_similarity_loss(u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Siamese regression: mean of (cos(u_i, v_i) - score_i)^2; u, v (B, H), scores (B,) in [-1, 1].

    Sentence-BERT's regression objective; sentence-transformers' ``CosineSimilarityLoss`` with its default
    ``MSELoss``.

    Raises:
        HfxError: u, v and scores differ in their number of rows.
    """
    _same_rows(u, v, scores.view(-1))
    return ((pairwise_cos(u, v) - scores.view(-1).to(u.dtype)) ** 2).mean()


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float, distance: str = "cosine"
) -> torch.Tensor:
    """mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin); all inputs (B, H).

    ``cosine``: d = 1 - cos, which gives max(0, margin - cos(a, p) + cos(a, n)) since the ones cancel
    (sentence-transformers' ``TripletDistanceMetric.COSINE``). ``euclidean``: d = ||a - p||_2 (FaceNet,
    Schroff et al. 2015, without the square, as sentence-transformers' ``TripletLoss``, whose default is
    euclidean with margin 5).

    Raises:
        HfxError: the three columns differ in rows, or ``distance`` is unknown.
    """
    _same_rows(anchor, positive, negative)
    if distance == "cosine":
        d_pos = 1 - pairwise_cos(anchor, positive)  # (B,)
        d_neg = 1 - pairwise_cos(anchor, negative)  # (B,)
    elif distance == "euclidean":
        d_pos = torch.linalg.vector_norm(anchor - positive, dim=-1)  # (B,)
        d_neg = torch.linalg.vector_norm(anchor - negative, dim=-1)  # (B,)
    else:
        raise HfxError(f"unknown triplet distance {distance!r}; choose cosine or euclidean")
    return F.relu(d_pos - d_neg + margin).mean()


def mnrl_loss(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: list[torch.Tensor] | None = None, scale: float = 20.0
) -> torch.Tensor:
    """Multiple-negatives ranking loss: softmax cross-entropy of each anchor over every candidate.

    anchors, positives (B, H); optional hard ``negatives``, each (B, H). Anchor i's candidates are all B
    positives and all hard negatives of the batch; the right one is positive i, the others are
    in-batch negatives (Henderson et al. 2017, https://arxiv.org/abs/1705.00652). Logits are
    ``scale * cos`` (scale = 1 / temperature).

    Raises:
        HfxError: the columns differ in their number of rows.
    """
    negatives = negatives or []
    _same_rows(anchors, positives, *negatives)
    candidates = torch.cat([positives, *negatives], dim=0)  # (B * (1 + k), H)
    logits = scale * cos_sim(anchors, candidates)  # (B, B * (1 + k))
    target = torch.arange(anchors.shape[0], device=anchors.device)  # positive i is column i
    return F.cross_entropy(logits, target)  # = mean_i (logsumexp_j logits_ij - logits_ii)
