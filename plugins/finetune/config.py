"""Config of the ``finetune`` plugin.

:class:`FinetuneConfig` is what ``hfx.apply(model, "finetune", ...)`` takes: the head's fields, named as in
transformers' ``PretrainedConfig`` (``num_labels``, ``problem_type``, ``classifier_dropout``), and which weights
train. :class:`FinetuneRunConfig` adds what only ``hfx run`` uses (the ``finetune:`` section: the generation
score of the evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass

from hfx.errors import HfxError

__all__ = ["PROBLEM_TYPES", "FinetuneConfig", "FinetuneRunConfig"]

PROBLEM_TYPES = ("", "regression", "single_label_classification", "multi_label_classification")


@dataclass
class FinetuneConfig:
    """Full fine-tuning with a task-specific head (transformers' ``*ForSequenceClassification`` conventions)."""

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

    def __post_init__(self) -> None:
        if self.num_labels < 1:
            raise HfxError(f"finetune.num_labels must be at least 1, got {self.num_labels}")
        if self.problem_type not in PROBLEM_TYPES:
            choices = ", ".join(p or "''" for p in PROBLEM_TYPES)
            raise HfxError(f"finetune.problem_type must be one of {choices}, got {self.problem_type!r}")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise HfxError(f"finetune.classifier_dropout must be in [0, 1), got {self.classifier_dropout}")


@dataclass
class FinetuneRunConfig(FinetuneConfig):
    """The ``finetune:`` section of ``hfx run``: :class:`FinetuneConfig` plus what only the recipe uses."""

    eval_generations: int = 64
    """Seq2seq evaluation: held-out examples answered greedily for the exact-match score (0: none)."""
    max_new_tokens: int = 8
    """Seq2seq evaluation: tokens generated per example (transformers' generate(max_new_tokens=...))."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_generations < 0 or self.max_new_tokens < 1:
            raise HfxError("finetune.eval_generations must be >= 0 and finetune.max_new_tokens >= 1")
