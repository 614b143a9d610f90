"""The last real token of each row, found from the attention mask.

A causal model has seen the whole text only at its last real token, so classification heads, reward
heads and last-token pooling read the hidden state there. transformers' ``*ForSequenceClassification``
finds it as the rightmost id that is not ``pad_token_id``; that rule reads a pad position when
``pad_token_id`` is unset (it takes the last column), and cuts one token too early when the pad id equals
EOS and the text ends with EOS. The attention mask says which positions are real whatever the pad id is,
so every head in hfx reads it here, for left and right padding alike (sentence-transformers' ``lasttoken``
pooling does the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hfx.errors import HfxError

__all__ = ["gather_last", "last_token_index", "real_token_mask"]


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
