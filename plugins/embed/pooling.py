"""Pooling heads: one vector per sentence from a transformer's token vectors.

Sentence-BERT (Reimers & Gurevych 2019, https://arxiv.org/abs/1908.10084) pools the last hidden states
of the tokens; the modes here are those of sentence-transformers' ``Pooling`` module, computed by
:mod:`hfx.pooling` with the same arithmetic, so the vectors agree with it to rounding:

- ``mean``: sum of the real tokens' vectors / number of real tokens (padding ignored);
- ``max``: element-wise maximum over the real tokens (padding set to -inf first);
- ``cls``: the first real token's vector ([CLS] for BERT);
- ``lasttoken``: the last real token's vector (decoders, whose last token has attended to all others);
- ``weightedmean``: mean with weight ``i`` for the i-th real token (1-based) - later tokens of a decoder
  have seen more context (SGPT, Muennighoff 2022, https://arxiv.org/abs/2202.08904).

``mask`` is the attention mask: 1 for real tokens, 0 for padding, on either side (left padding is the
rule for decoders): every mode finds the first and last real token from the mask, not from positions.
"""

from __future__ import annotations

import torch
from torch import nn

from hfx.errors import HfxError, did_you_mean
from hfx.pooling import cls_pool, gather_last, max_pool, mean_pool, weighted_mean_pool
from hfx_plugins.embed.config import POOLING_MODES

__all__ = ["POOLING_MODES", "Pooling", "check_pooling", "pool"]


def check_pooling(mode: str) -> str:
    """Return ``mode`` if it is a known pooling mode; raise one-line HfxError otherwise.

    Raises:
        HfxError: ``mode`` is not one of :data:`POOLING_MODES`.
    """
    if mode not in POOLING_MODES:
        raise HfxError(
            f"unknown pooling mode {mode!r}{did_you_mean(mode, POOLING_MODES)}; choose one of: {', '.join(POOLING_MODES)}"
        )
    return mode


_POOLERS = {"mean": mean_pool, "max": max_pool, "cls": cls_pool, "lasttoken": gather_last,
            "weightedmean": weighted_mean_pool}
"""Each mode's function in :mod:`hfx.pooling`, where the arithmetic (sentence-transformers') is written."""


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token vectors ``hidden`` (B, T, H) with attention mask ``mask`` (B, T) into (B, H).

    Raises:
        HfxError: ``mode`` is unknown, or (``lasttoken``) a row has no real token.
    """
    return _POOLERS[check_pooling(mode)](hidden, mask)  # (B, H)


class Pooling(nn.Module):
    """``pool`` as a module, with optional L2 normalisation of the result.

    Args:
        mode: One of :data:`POOLING_MODES`.
        normalize: Divide each sentence vector by its L2 norm (cosine similarity becomes a dot product).

    Raises:
        HfxError: ``mode`` is unknown.
    """

    def __init__(self, mode: str = "mean", normalize: bool = False) -> None:
        super().__init__()
        self.mode = check_pooling(mode)
        self.normalize = normalize

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) token states and (B, T) attention mask -> (B, H) sentence embeddings, L2-normalised if
        asked.

        Pooling by :func:`hfx.pooling.pool` in this module's mode; normalisation as sentence-transformers'
        ``Normalize``.
        """
        out = pool(hidden, mask, self.mode)  # (B, H)
        if self.normalize:
            # F.normalize divides by max(norm, 1e-12): sentence-transformers' Normalize module exactly.
            out = nn.functional.normalize(out, p=2, dim=-1)
        return out

    def extra_repr(self) -> str:
        """Pooling mode and normalisation, shown by ``print(model)``."""
        return f"mode={self.mode!r}, normalize={self.normalize}"
