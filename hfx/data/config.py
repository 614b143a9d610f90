"""The ``data:`` section of an ``hfx run`` config, kept apart from the loaders so that reading it imports
neither ``datasets`` nor torch (``hfx config`` and every config error stay fast)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """The ``data:`` section of ``hfx run``: where the examples come from and which columns to use."""

    path: str = ""
    """Bundled data set name (sentiment, pydoc), or a local JSONL/JSON/CSV/parquet file, a folder of such files named by split (train.jsonl, test.jsonl), or a folder saved with datasets' save_to_disk. Empty: the recipe's default."""
    text_column: str = "text"
    """Column holding the input text."""
    text_pair_column: str = ""
    """Column holding a second input text (sentence pairs); empty for none."""
    label_column: str = "label"
    """Column holding the class label (integer or string; strings are encoded in sorted order)."""
    target_column: str = "target"
    """Column holding the output text of sequence-to-sequence tasks."""
    train_split: str = "train"
    """Split used for training."""
    eval_split: str = "test"
    """Split used for evaluation; when missing, a validation/dev split is used, else eval_fraction of train."""
    eval_fraction: float = 0.2
    """Share of the training split held out (seeded) for evaluation when the source has no eval split."""
    max_length: int = 128
    """Longest input in tokens; longer inputs are truncated."""
    max_train_samples: int = 0
    """Use only the first N training examples; 0 uses all."""
    max_eval_samples: int = 0
    """Use only the first N evaluation examples; 0 uses all."""
