"""Pooling heads: one vector per sentence from a transformer's token vectors.

Sentence-BERT (Reimers & Gurevych 2019, https://arxiv.org/abs/1908.10084) pools the last hidden states
of the tokens; the modes here are those of sentence-transformers' ``Pooling`` module, with the same
arithmetic, so the vectors agree with it to rounding:

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
from hfx.pooling import last_token_index
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


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token vectors ``hidden`` (B, T, H) with attention mask ``mask`` (B, T) into (B, H).

    Raises:
        HfxError: ``mode`` is unknown.
    """
    B, T, H = hidden.shape
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if mode == "mean":
        # sum / count, with the count clamped at 1e-9 as sentence-transformers does (an all-padding row
        # gives 0 instead of NaN). Padding rows are multiplied by 0 rather than dropped, which keeps the
        # summation order of sentence-transformers and so its rounding.
        summed = (hidden * m).sum(dim=1)  # (B, H)
        count = m.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        return summed / count
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values  # (B, H)
    if mode == "cls":
        first = mask.to(torch.int).argmax(dim=1)  # (B,) index of the first real token (left padding too)
        return hidden[torch.arange(B, device=hidden.device), first]  # (B, H)
    if mode == "lasttoken":
        last = last_token_index(mask)  # (B,) the last real token, from the mask (hfx.pooling)
        # sentence-transformers multiplies by the mask before gathering (a 0 row for all padding); same here.
        return (hidden * m)[torch.arange(B, device=hidden.device), last]  # (B, H)
    if mode == "weightedmean":
        # Weight i for the i-th real token. Positions count from the first real token, so left padding
        # does not shift the weights (sentence-transformers subtracts the pad length the same way).
        start = mask.to(torch.int).argmax(dim=1, keepdim=True)  # (B, 1)
        pos = torch.arange(1, T + 1, device=hidden.device).unsqueeze(0) - start  # (B, T)
        w = m * pos.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1); zero on padding
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)  # (B, H)
    check_pooling(mode)  # raises the one-line error for an unknown mode
    raise AssertionError(f"pooling mode {mode!r} is listed but not implemented")


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
        out = pool(hidden, mask, self.mode)  # (B, H)
        if self.normalize:
            # F.normalize divides by max(norm, 1e-12): sentence-transformers' Normalize module exactly.
            out = nn.functional.normalize(out, p=2, dim=-1)
        return out

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, normalize={self.normalize}"
