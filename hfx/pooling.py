"""Pooling: one vector per row from token vectors (B, T, H) and an attention mask (B, T).

Every function finds padding from the attention mask (1 = real token, 0 = padding), so left padding
(decoders) and right padding (encoders) pool alike.

- :func:`mean_pool`, :func:`max_pool`, :func:`cls_pool`, :func:`weighted_mean_pool`: the arithmetic of
  sentence-transformers' ``Pooling`` module (``mean``, ``max``, ``cls``, ``weightedmean``), so the vectors
  agree with it to rounding (tests/hfx/test_pooling.py runs both on a tiny BERT and a tiny Llama);
- :func:`gather_last` (``lasttoken``): the last real token, found by :func:`last_token_index`. One departure:
  a row with no real token is an error here, where sentence-transformers returns a zero vector for it.

The last real token
-------------------
A causal model has seen the whole text only at its last real token, so classification heads, reward
heads and last-token pooling read the hidden state there. transformers' ``*ForSequenceClassification``
finds it as the rightmost id that is not ``pad_token_id``; that rule reads a pad position when
``pad_token_id`` is unset (it takes the last column), and cuts one token too early when the pad id equals
EOS and the text ends with EOS. The attention mask says which positions are real whatever the pad id is,
so every head in hfx reads it here, for left and right padding alike (sentence-transformers' ``lasttoken``
pooling does the same). Where the pad id is a token no text contains, the two rules pick the same position
(tests/hfx/test_pooling.py compares with ``LlamaForSequenceClassification``); without a mask, the rule is
transformers' own (:func:`real_token_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hfx.errors import HfxError

__all__ = ["cls_pool", "gather_last", "last_token_index", "max_pool", "mean_pool", "real_token_mask",
           "weighted_mean_pool"]


def real_token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    pad_token_id: int | None = None,
                    eos_token_id: int | Sequence[int] | None = None) -> torch.Tensor:
    """The attention mask (B, T), or one rebuilt from the ids when the caller passed none.

    Without a mask, padding can only be told from the ids: tokens equal to ``pad_token_id`` are padding,
    unless the pad id is unset or equals ``eos_token_id`` (then an EOS may be real: every token counts).

    Args:
        input_ids: Token ids (B, T).
        attention_mask: 1 for real tokens, 0 for padding (B, T), or None.
        pad_token_id: The model's pad id, or None.
        eos_token_id: The model's EOS id (or ids, as generation configs allow), or None.

    Returns:
        A (B, T) tensor, nonzero at real tokens.
    """
    if attention_mask is not None:
        return attention_mask
    eos = set(eos_token_id) if isinstance(eos_token_id, Sequence) else {eos_token_id}
    if pad_token_id is None or pad_token_id in eos:
        return torch.ones_like(input_ids)
    return (input_ids != pad_token_id).to(input_ids.dtype)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the rightmost real token of each row, for left or right padding.

    Args:
        attention_mask: (B, T), nonzero at real tokens (a 2-D padding mask, not a 4-D attention bias).

    Returns:
        Long tensor (B,) of positions in ``[0, T)``.

    Raises:
        HfxError: the mask is not 2-D, or a row has no real token (an empty text after truncation).
    """
    if attention_mask.dim() != 2:
        raise HfxError(f"the attention mask must be (batch, tokens), got shape {tuple(attention_mask.shape)}; "
                       "pass the tokenizer's 2-D attention_mask")
    real = attention_mask.bool()  # (B, T)
    if not bool(real.any(-1).all()):
        row = int((~real.any(-1)).nonzero()[0, 0])
        raise HfxError(f"row {row} of the batch has no real token (all padding); drop empty texts before scoring")
    positions = torch.arange(real.shape[1], device=real.device)  # (T,)
    return torch.where(real, positions, -1).amax(-1)  # (B,)


def gather_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The vector of the last real token of each row: hidden (B, T, H), mask (B, T) -> (B, H).

    Raises:
        HfxError: as :func:`last_token_index`.
    """
    idx = last_token_index(attention_mask).to(hidden.device)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # (B, H)


def _accumulation_dtype(hidden: torch.Tensor) -> torch.dtype:
    """float32 for half-precision states (sums of many bf16 values lose digits), else their own dtype.

    As sentence-transformers' ``Pooling``: it sums fp16/bf16 token vectors in float32 and casts the mean back.
    """
    return torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' vectors: hidden (B, T, H), mask (B, T) -> (B, H) in hidden's dtype.

    sentence-transformers' ``mean``: padding is multiplied by 0 (not dropped, which keeps its summation order
    and so its rounding), the sum is taken in float32 for half precision, and the count is clamped at 1e-9 (an
    all-padding row gives 0, not NaN).
    """
    acc = _accumulation_dtype(hidden)
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    summed = (hidden * m).sum(dim=1, dtype=acc)  # (B, H)
    count = m.sum(dim=1, dtype=acc).clamp(min=1e-9)  # (B, 1)
    return (summed / count).to(hidden.dtype)  # (B, H)


def max_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over the real tokens: hidden (B, T, H), mask (B, T) -> (B, H).

    Padding is set to -inf before the maximum, as sentence-transformers' ``max`` (an all-padding row gives -inf).
    """
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values  # (B, H)


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The first real token's vector ([CLS] for BERT): hidden (B, T, H), mask (B, T) -> (B, H).

    The first real token comes from the mask, as sentence-transformers' ``cls``: under left padding column 0
    is a pad.
    """
    first = attention_mask.to(torch.int).argmax(dim=1).to(hidden.device)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]  # (B, H)


def weighted_mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean with weight i for the i-th real token (1-based): hidden (B, T, H), mask (B, T) -> (B, H).

    Later tokens of a decoder have seen more context (SGPT, Muennighoff 2022, https://arxiv.org/abs/2202.08904).
    Positions count from the first real token, so left padding does not shift the weights; sentence-transformers'
    ``weightedmean`` subtracts the pad length the same way and weighs in float32 for half precision.
    """
    acc = _accumulation_dtype(hidden)
    T = hidden.shape[1]
    start = attention_mask.to(torch.int).argmax(dim=1, keepdim=True).to(hidden.device)  # (B, 1)
    pos = torch.arange(1, T + 1, device=hidden.device).unsqueeze(0) - start  # (B, T)
    w = attention_mask.unsqueeze(-1).to(acc) * pos.to(acc).unsqueeze(-1)  # (B, T, 1); zero on padding
    return ((hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)).to(hidden.dtype)  # (B, H)
