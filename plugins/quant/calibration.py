"""Calibration text for GPTQ in ``hfx run plugin=quant`` and the benchmark, disjoint from the evaluated text.

- decoder: the evaluation windows are the first ``eval_windows * eval_window`` tokens of the sorted
  ``pydoc_data.topics`` (:func:`hfx.data.text.pydoc_token_windows`); calibration takes the
  ``calibration_samples * calibration_window`` tokens that follow them in the same token stream, so no
  evaluated token is ever seen by the calibration;
- encoder: the embedding table evaluates the first 600 pydoc sentences (:func:`hfx.data.text.pydoc_sentences`,
  40 to 300 characters); calibration takes the ``calibration_sentences`` sentences after them.
"""

from __future__ import annotations

from typing import Any

import torch

from hfx.data.text import pydoc_sentences, pydoc_token_windows
from hfx.errors import HfxError
from hfx_plugins.quant.config import QuantRunConfig

__all__ = ["lm_calibration", "sentence_calibration"]


def lm_calibration(tokenizer: Any, cfg: QuantRunConfig, eval_tokens: int, batch_size: int = 4) -> list[torch.Tensor]:
    """Batches (B, calibration_window) of the pydoc tokens right after the first ``eval_tokens`` (the evaluation).

    B is ``batch_size`` (the last batch may be smaller); the ``cfg.calibration_samples`` windows never overlap the
    evaluated tokens.
    """
    n = cfg.calibration_samples * cfg.calibration_window
    stream = pydoc_token_windows(tokenizer, 1, eval_tokens + n).view(-1)  # the evaluation's token stream
    windows = stream[eval_tokens:].view(cfg.calibration_samples, cfg.calibration_window)  # (C, Wc), disjoint
    return list(windows.split(batch_size))


def sentence_calibration(tokenizer: Any, cfg: QuantRunConfig, n_evaluated: int = 600, batch_size: int = 32,
                         max_length: int = 128) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches of the ``cfg.calibration_sentences`` pydoc sentences after the ``n_evaluated`` first ones.

    Returns:
        Tokenizer outputs, each with ``input_ids`` and ``attention_mask`` of shape (B, T), T <= ``max_length``.

    Raises:
        HfxError: pydoc_data.topics has fewer sentences than asked for after the evaluated ones.
    """
    sentences = pydoc_sentences(40, 300)
    chosen = sentences[n_evaluated:n_evaluated + cfg.calibration_sentences]
    if len(chosen) < cfg.calibration_sentences:
        raise HfxError(f"pydoc_data.topics has {len(sentences) - n_evaluated} sentences after the {n_evaluated} "
                       f"evaluated ones; lower quant.calibration_sentences (now {cfg.calibration_sentences})")
    return [dict(tokenizer(chosen[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")) for i in range(0, len(chosen), batch_size)]
