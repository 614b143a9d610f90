"""``hfx.apply(model, "finetune", ...)``: put a task head on a bare backbone and choose what trains."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from hfx.errors import HfxError
from hfx.models.loading import model_family
from hfx_plugins.finetune.config import FinetuneConfig
from hfx_plugins.finetune.family_heads import FAMILY_HEADS, FamilyClassifier
from hfx_plugins.finetune.heads import SequenceClassifier

__all__ = ["apply"]


def _is_bare(model: nn.Module) -> bool:
    """A backbone without a task head (what ``AutoModel`` returns): no output layer, no classifier."""
    return (
        isinstance(model, PreTrainedModel)
        and model.get_output_embeddings() is None
        and not any(isinstance(getattr(model, n, None), nn.Module) for n in ("classifier", "score", "lm_head"))
    )


def apply(model: nn.Module, cfg: FinetuneConfig) -> nn.Module:
    """Return the model to fine-tune.

    A bare encoder or decoder (``AutoModel``) gets an in-house :class:`SequenceClassifier` head (the family's
    own head structure for the model types of :data:`.family_heads.FAMILY_HEADS`); a model
    that already has a head (``*ForCausalLM``, ``*ForSeq2SeqLM``, ``*ForSequenceClassification``) keeps it.
    Then ``freeze_base`` / ``freeze_embeddings`` decide which weights train.

    Raises:
        HfxError: a bare encoder-decoder (no task head to add), or ``freeze_base`` on a model whose head
            cannot be found.
    """
    if _is_bare(model):
        family = model_family(model.config)
        if family == "encoder-decoder":
            raise HfxError("a bare encoder-decoder has no task head to add; load it with task=seq2seq-lm")
        # RoBERTa, ELECTRA, DistilBERT, DeBERTa-v2, ModernBERT: the family's own head (.family_heads)
        cls = FamilyClassifier if model.config.model_type in FAMILY_HEADS else SequenceClassifier
        model = cls(model, cfg.num_labels, family, cfg.classifier_dropout, cfg.problem_type)
    if cfg.freeze_base:
        heads = model.head_modules() if isinstance(model, FamilyClassifier) else [_head(model)]
        for p in model.parameters():
            p.requires_grad = False
        for p in (p for head in heads for p in head.parameters()):
            p.requires_grad = True
    if cfg.freeze_embeddings:
        base = getattr(model, "backbone", None) or getattr(model, "base_model", model)
        for p in base.get_input_embeddings().parameters():
            p.requires_grad = False
    return model


def _head(model: nn.Module) -> nn.Module:
    for name in ("classifier", "score", "lm_head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return getattr(model, name)
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is None:
        raise HfxError(f"finetune.freeze_base: cannot find the head of {type(model).__name__}")
    return out
