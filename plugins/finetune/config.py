"""Config of the ``finetune`` plugin (the ``finetune:`` section of ``hfx run``)."""

from __future__ import annotations

from dataclasses import dataclass

from hfx.errors import HfxError

__all__ = ["FinetuneConfig"]

_PROBLEMS = ("", "regression", "single_label_classification", "multi_label_classification")


@dataclass
class FinetuneConfig:
    """Full fine-tuning with a task-specific head."""

    num_labels: int = 2
    """Outputs of the classification head (1 = regression). Used for sequence classification only."""
    problem_type: str = ""
    """regression, single_label_classification or multi_label_classification; empty = inferred from the labels."""
    classifier_dropout: float = 0.1
    """Dropout before an encoder's classification head."""
    freeze_base: bool = False
    """Train only the new head (linear probing) instead of every weight."""
    freeze_embeddings: bool = False
    """Keep the token embeddings fixed (saves optimizer memory on large vocabularies)."""
    generate_max_new_tokens: int = 8
    """Seq2seq evaluation: tokens generated per example for the exact-match score."""
    eval_generations: int = 64
    """Seq2seq and causal LM evaluation: how many eval examples are decoded and shown or scored."""

    def __post_init__(self) -> None:
        if self.num_labels < 1:
            raise HfxError(f"finetune.num_labels must be at least 1, got {self.num_labels}")
        if self.problem_type not in _PROBLEMS:
            choices = ", ".join(p or "''" for p in _PROBLEMS)
            raise HfxError(f"finetune.problem_type must be one of {choices}, got {self.problem_type!r}")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise HfxError(f"finetune.classifier_dropout must be in [0, 1), got {self.classifier_dropout}")
