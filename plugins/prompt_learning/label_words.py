"""Classification by a causal language model's label words: the task of the prompt-learning recipes.

Each example becomes ``template.format(text=...)`` followed by the label word of its class (e.g.
``"Sentence: ...\\nLabel:" + " bar"``). Training takes the next-token loss on the label word's tokens only
(:func:`encode_rows`, :func:`collate`); evaluation scores every label word by its summed log-likelihood after
the prompt and picks the largest, as lm-evaluation-harness scores multiple choice (``acc``), through the one
scorer of hfx (:func:`hfx.scoring.loglikelihood`: lm-eval 0.4.13's context/continuation split and left
truncation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hfx.data.collate import IGNORE_INDEX, pad_rows
from hfx.errors import HfxError
from hfx.scoring import encode_pair, loglikelihood

__all__ = ["collate", "encode_rows", "label_word_scores"]


def encode_rows(tokenizer: Any, prompts: Sequence[str], words: Sequence[str],
                max_length: int) -> list[dict[str, list[int]]]:
    """Training examples: ``input_ids`` = prompt + word, ``labels`` ignored on the prompt, the word's ids after it.

    The split is :func:`hfx.scoring.encode_pair`'s, so training and scoring see the same tokens. A row longer
    than ``max_length`` loses its prompt's first tokens; the label word is never cut.

    Raises:
        HfxError: a label word with no tokens after its prompt.
    """
    rows = []
    for prompt, word in zip(prompts, words, strict=True):
        ctx, cont = encode_pair(tokenizer, prompt, word)
        if not cont:
            raise HfxError(f"the label word {word!r} has no tokens after {prompt[-40:]!r}; choose another label word")
        ctx = ctx[max(0, len(ctx) + len(cont) - max_length):]
        rows.append({"input_ids": ctx + cont, "labels": [IGNORE_INDEX] * len(ctx) + cont})
    return rows


def collate(pad_id: int) -> Any:
    """Right-pads ``input_ids`` (with ``pad_id``), ``attention_mask`` and ``labels`` (ignored) to the longest row."""

    def fn(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows([r["input_ids"] for r in rows], pad_id)  # (B, T) each
        labels, _ = pad_rows([r["labels"] for r in rows], IGNORE_INDEX, width=ids.shape[1])  # (B, T)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return fn


def label_word_scores(model: nn.Module, tokenizer: Any, prompts: Sequence[str], label_words: Sequence[str],
                      batch_size: int = 32, max_length: int = 512) -> torch.Tensor:
    """Summed log-likelihood of each label word after each prompt, ``(N, C)`` in nats.

    :func:`hfx.scoring.loglikelihood` on every (prompt, word) pair: one-token words of one prompt share one
    forward pass, and a pair longer than ``max_length`` + 1 tokens loses its first tokens (lm-eval's rule).
    The model must return logits aligned with ``input_ids`` (``(B, T, V)``), as hfx's prompt_tuning and
    prefix_tuning models and plain transformers models do.
    """
    requests = [(p, w) for p in prompts for w in label_words]
    scores = [ll for ll, _ in loglikelihood(model, tokenizer, requests, batch_size, max_length)]
    return torch.tensor(scores).view(len(prompts), len(label_words))  # (N, C)
