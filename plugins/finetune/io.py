"""Save and load what ``finetune`` produces, in transformers' own format.

The folder is what ``save_pretrained`` writes (``config.json`` + ``model.safetensors``), so
``AutoModelForSequenceClassification`` / ``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM`` load it
without hfx; ``hfx_finetune.json`` beside it records the plugin config (the :class:`FinetuneConfig` fields
only: what ``hfx run`` alone uses does not shape the model) so :func:`load` can rebuild the head.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoModelForSequenceClassification

from hfx.errors import HfxError
from hfx.io import (
    config_marker,
    has_config_marker,
    load_weights_strict,
    read_config_marker,
    write_config_marker,
)
from hfx_plugins.finetune.apply import apply
from hfx_plugins.finetune.config import FinetuneConfig
from hfx_plugins.finetune.heads import SequenceClassifier

__all__ = ["MARKER", "can_load", "load", "save", "to_transformers"]

MARKER = config_marker("finetune")


def can_load(path: Path) -> bool:
    """Whether ``path`` was written by :func:`save` (it holds ``hfx_finetune.json``)."""
    return has_config_marker(path, "finetune")


def _checked_config(config: object) -> object:
    """``config``, after checking that transformers has a ``*ForSequenceClassification`` for its model type.

    Raises:
        HfxError: it has none (OLMoE in transformers 5.25): the classifier cannot be saved in transformers' format.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise HfxError(f"transformers has no *ForSequenceClassification for model type "
                       f"{getattr(config, 'model_type', '?')!r}, so this classifier cannot be saved in its format; "
                       "keep the model in memory or use a model type transformers can classify with")
    return config


def to_transformers(model: SequenceClassifier) -> nn.Module:
    """The equivalent ``AutoModelForSequenceClassification`` with the same weights (checked strictly).

    Raises:
        HfxError: transformers' class for this architecture has another parameter layout than hfx's head.
    """
    hf = AutoModelForSequenceClassification.from_config(_checked_config(model.config))
    result = hf.load_state_dict(model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise HfxError(
            f"{type(hf).__name__} does not have the layout of hfx's head (missing {result.missing_keys[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}); this architecture is not supported by finetune's save"
        )
    return hf.eval()


def save(model: nn.Module, path: Path, cfg: FinetuneConfig | None = None) -> None:
    """Write ``model`` with ``save_pretrained`` (safetensors) plus the plugin config.

    Raises:
        HfxError: an hfx head whose architecture transformers' ``*ForSequenceClassification`` cannot hold.
    """
    path.mkdir(parents=True, exist_ok=True)
    hf = to_transformers(model) if isinstance(model, SequenceClassifier) else model
    hf.save_pretrained(path)  # type: ignore[operator]
    from hfx.protocols import config_of

    cfg = cfg or config_of(model, "finetune") or FinetuneConfig()
    write_config_marker(path, "finetune", cfg, FinetuneConfig)  # a run config's extra fields left out


def load(model: nn.Module, path: Path) -> tuple[nn.Module, FinetuneConfig]:
    """Rebuild the head on ``model`` and load every weight from ``path`` strictly.

    Raises:
        HfxError: a missing, truncated or corrupted weights file, a saved weight of another shape, or weights
            missing from / unknown to the model (``model`` is not the base the folder was trained from).
    """
    cfg, _ = read_config_marker(path, "finetune", FinetuneConfig)
    model = apply(model, cfg)
    load_weights_strict(model, path, "load onto the base model the weights were trained from",
                        "load them onto the base model they were trained from")
    return model, cfg


