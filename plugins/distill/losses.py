"""Distillation losses, written out term by term.

Knowledge distillation (Hinton, Vinyals & Dean 2015, https://arxiv.org/abs/1503.02531) trains a student
on the teacher's softened output distribution; DistilBERT (Sanh et al. 2019, https://arxiv.org/abs/1910.01108)
adds the hard-label loss and a cosine loss between hidden states (the "triple loss")::

    loss = alpha * T^2 * D(p_teacher^T, p_student^T) + (1 - alpha) * CE(student, labels)
           + hidden_weight * (1 - cos(h_student, h_teacher))

with ``p^T = softmax(logits / T)``. ``D`` is one of

- ``forward_kl``: KL(p_t || p_s), mass-covering (Hinton; DistilBERT; trl's generalized JSD at beta = 0);
- ``reverse_kl``: KL(p_s || p_t), mode-seeking (MiniLLM; trl's generalized JSD at beta = 1);
- ``jsd``: the generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, https://arxiv.org/abs/2306.13649,
  Eq. 1) with trl's convention: m = beta * p_t + (1 - beta) * p_s and
  JSD_beta = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m).

Every divergence is summed over the classes/vocabulary of each position and averaged over the positions
that count (``mask``): that is trl's ``reduction="batchmean"`` with labels, and DistilBERT's
``KLDivLoss(reduction="batchmean")`` on the masked-selected rows.

Departure from trl: the factor T^2 multiplies every divergence here, not only the forward KL. Hinton et al.
(Sec. 2) scale by T^2 because the soft targets' gradients shrink as 1/T^2; the same holds for the reverse
KL and the JSD, and the factor keeps alpha meaning the same at any temperature. trl's
``generalized_jsd_loss`` has no T^2, so the validation compares ``kd_loss / T^2`` with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hfx.errors import HfxError
from hfx_plugins.distill.config import DIVERGENCES

__all__ = ["DIVERGENCES", "divergence", "embedding_mse", "hidden_cosine_loss", "kd_loss", "masked_mean"]



def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (...) over the True entries of ``mask`` (...); 0 (with a gradient path) if none."""
    if mask is None:
        return values.mean()
    mask = mask.to(torch.bool)
    # clamp_min(1): a batch whose positions are all ignored gives 0 rather than 0/0 = nan (as trl does).
    return values[mask].sum() / mask.sum().clamp_min(1)


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Divergence between the softened distributions at each position. (..., V), (..., V) -> (...)

    Computed in float32 from log-probabilities (``log_softmax``), never from probabilities: a probability
    that underflows to 0 would make ``log`` infinite.

    Raises:
        HfxError: an unknown ``kind``, or ``beta`` outside (0, 1) for jsd.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (..., V) log p_s
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (..., V) log p_t
    if kind == "forward_kl":
        return (t.exp() * (t - s)).sum(-1)  # (...) KL(p_t || p_s)
    if kind == "reverse_kl":
        return (s.exp() * (s - t)).sum(-1)  # (...) KL(p_s || p_t)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise HfxError(f"jsd needs 0 < beta < 1 (beta 0 is forward_kl, 1 is reverse_kl), got {beta}")
        # log m = log(beta * p_t + (1 - beta) * p_s), in log space for stability.
        m = torch.logsumexp(torch.stack([t + math.log(beta), s + math.log1p(-beta)]), dim=0)  # (..., V)
        kl_t = (t.exp() * (t - m)).sum(-1)  # (...) KL(p_t || m)
        kl_s = (s.exp() * (s - m)).sum(-1)  # (...) KL(p_s || m)
        return beta * kl_t + (1.0 - beta) * kl_s
    raise HfxError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """T^2 * divergence, averaged over the positions where ``mask`` is True. (..., V), (..., V), (...) -> ()"""
    per_position = divergence(student_logits, teacher_logits, kind, beta, temperature)  # (...)
    return temperature**2 * masked_mean(per_position, mask)


def hidden_cosine_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """DistilBERT's cosine term: mean of 1 - cos(h_s, h_t) over the masked positions. (B, T, H) x2, (B, T) -> ()

    It is ``CosineEmbeddingLoss(reduction="mean")`` with target 1 on the selected rows, as in DistilBERT's
    ``distiller.py``; it needs student and teacher of the same width (DistilBERT keeps BERT's 768).
    """
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)  # (B, T)
    return masked_mean(1.0 - cos, mask)


def embedding_mse(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Embedding regression: mean squared error over every coordinate. (B, D), (B, D) -> ()

    This is sentence-transformers' ``MSELoss`` (``nn.MSELoss()`` between student and teacher embeddings),
    the loss of its layer-reduction distillation example.
    """
    return F.mse_loss(student_emb.float(), teacher_emb.float())
