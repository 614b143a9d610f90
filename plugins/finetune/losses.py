"""Task losses, written out so they can be read and checked against transformers' own.

Each matches what the transformers model computes when given ``labels`` (``hfx validate plugin=finetune``
checks this), with padding and ignored positions (label IGNORE_INDEX, -100) masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hfx.data.collate import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "causal_lm_loss", "classification_loss", "infer_problem_type", "seq2seq_loss"]

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def infer_problem_type(num_labels: int, labels: torch.Tensor) -> str:
    """transformers' rule: one output is regression, integer labels are single-label, else multi-label.

    ``labels`` is (B,) class ids or targets, or (B, C) multi-hot floats; only its dtype is read.
    """
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Loss of pooled ``logits`` (B, C) against ``labels`` (B,) class ids, (B,) targets or (B, C) multi-hot."""
    if problem_type == "regression":
        # (B, 1) -> (B,): one regression target per example.
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1), ignore_index=IGNORE_INDEX)
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"unknown problem_type {problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts token t+1.

    logits (B, T, V), labels (B, T) with IGNORE_INDEX at padding and at tokens that should not be learnt (e.g. the
    prompt). The mean is over the predicted (non-ignored) tokens of the whole batch, as transformers does.
    """
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V): predictions for positions 1..T-1
    shift_labels = labels[:, 1:]  # (B, T-1): the tokens they should predict
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def seq2seq_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Decoder cross-entropy: logits (B, T, V) were produced from labels shifted right, so no shift here."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)
