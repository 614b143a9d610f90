"""The check the prompt-learning plugins make beyond :mod:`hfx.parity`: greedy ``generate()`` must equal argmax
decoding by full forward passes (:func:`greedy_by_forward`), which a prompt or prefix dropped in one of
``generate()``'s cached steps would break.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from hfx.parity import TEXTS

__all__ = ["generation_mismatch", "greedy_by_forward"]

@torch.no_grad()
def greedy_by_forward(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int,
                      start_token_id: int | None = None) -> torch.Tensor:
    """Greedy decoding by full forward passes, no cache: argmax of the last position, appended, ``steps`` times.

    What ``generate(do_sample=False)`` must reproduce; a prompt or prefix dropped in one of ``generate``'s
    cached steps makes the two differ. ``inputs`` holds one unpadded batch (``input_ids``, ``attention_mask``).
    Encoder-decoder models (``start_token_id`` given) decode from ``[[start_token_id]]`` with the encoder input
    fixed; decoder models extend ``input_ids``.

    Returns:
        ``(B, T + steps)`` for decoder models, ``(B, 1 + steps)`` for encoder-decoder models, like ``generate``.
    """
    ids = inputs["input_ids"]
    out = ids if start_token_id is None else torch.full((ids.shape[0], 1), start_token_id, dtype=ids.dtype)
    for _ in range(steps):
        if start_token_id is None:
            logits = model(input_ids=out, attention_mask=torch.ones_like(out)).logits  # (B, T, V)
        else:
            logits = model(input_ids=ids, attention_mask=inputs["attention_mask"], decoder_input_ids=out).logits
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


def generation_mismatch(model: nn.Module, tok: Any, family: str, max_new_tokens: int = 8) -> float:
    """Fraction of tokens where greedy ``generate()`` differs from argmax decoding by full forward passes.

    One unpadded prompt (``TEXTS[0]``); T5 decodes from the pad id, its decoder start token.
    """
    x = dict(tok(TEXTS[:1], return_tensors="pt"))
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        got = model.generate(**x, max_new_tokens=max_new_tokens, do_sample=False)
        first = tok.pad_token_id if family == "t5" else None
        steps = got.shape[1] - (1 if family == "t5" else x["input_ids"].shape[1])
        want = greedy_by_forward(model, x, steps, first)
    return (got != want).float().mean().item()
