"""Each encoder family's own classification head, so that ``hfx.save`` writes its ``*ForSequenceClassification``.

hfx's score head (:mod:`hfx.heads`: pooler or first token -> dropout -> one ``classifier`` Linear) is
``BertForSequenceClassification``'s. Other encoder families put more on top of the backbone, and transformers
can only load a saved classifier whose head has their structure. For those families :class:`FamilyClassifier`
builds transformers' own head modules for the config (on the meta device, then materialised with PyTorch's
default initialisation, as hfx's Linear head) and applies them as the family's ``forward`` does:

| model type | head (names as in transformers) | what it computes from the last hidden states h (B, T, H) |
|---|---|---|
| roberta, xlm-roberta | ``classifier``: ``*ClassificationHead`` (``dense``, ``out_proj``); no backbone pooler | out_proj(drop(tanh(dense(drop(h[:, 0]))))) |
| electra | ``classifier``: ``ElectraClassificationHead`` (``dense``, ``out_proj``) | out_proj(drop(gelu(dense(drop(h[:, 0]))))) |
| distilbert | ``pre_classifier``, ``classifier``, ``dropout`` | classifier(drop(relu(pre_classifier(h[:, 0])))) |
| deberta-v2 | ``pooler`` (``ContextPooler``: ``dense``), ``classifier``, ``dropout`` | classifier(drop(act(dense(drop(h[:, 0]))))) |
| modernbert | ``head`` (``dense``, ``norm``), ``drop``, ``classifier`` | classifier(drop(head(pool(h)))), pool = h[:, 0] or the masked mean (``classifier_pooling``) |

Sources: transformers 5.25's ``RobertaForSequenceClassification``, ``XLMRobertaForSequenceClassification``,
``ElectraForSequenceClassification``, ``DistilBertForSequenceClassification``,
``DebertaV2ForSequenceClassification`` and ``ModernBertForSequenceClassification``. Every dropout of the head
takes ``finetune.classifier_dropout`` (transformers reads it from several config fields per family). The loss is
:class:`SequenceClassifier`'s (transformers' rule for every family).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from hfx.errors import HfxError
from hfx_plugins.finetune.heads import SequenceClassifier

__all__ = ["FAMILY_HEADS", "FamilyClassifier", "family_head_modules"]

FAMILY_HEADS: dict[str, tuple[str, ...]] = {
    "roberta": ("classifier",),
    "xlm-roberta": ("classifier",),
    "electra": ("classifier",),
    "distilbert": ("pre_classifier", "classifier", "dropout"),
    "deberta-v2": ("pooler", "classifier", "dropout"),
    "modernbert": ("head", "drop", "classifier"),
}
"""model type -> the head modules of its ``*ForSequenceClassification`` (every child but the backbone)."""


def family_head_modules(config: object) -> dict[str, nn.Module]:
    """transformers' head modules of the family's ``*ForSequenceClassification`` for ``config``, on the CPU.

    The class is built on the meta device (no weights allocated), the head modules are taken from it and given
    storage, and every submodule with ``reset_parameters`` (Linear, LayerNorm) is reset: PyTorch's default
    initialisation, as hfx's Linear head keeps (:class:`SequenceClassifier`).

    Raises:
        HfxError: the model type is not in :data:`FAMILY_HEADS`.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    names = FAMILY_HEADS.get(getattr(config, "model_type", ""))
    if names is None:
        raise HfxError(f"finetune has no family head for model type {getattr(config, 'model_type', '?')!r}; "
                       f"those it has: {', '.join(FAMILY_HEADS)}")
    with torch.device("meta"):
        template = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)](config)
    heads = {}
    for name in names:
        module = getattr(template, name).to_empty(device="cpu")
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        heads[name] = module
    return heads


class FamilyClassifier(SequenceClassifier):
    """:class:`SequenceClassifier` with the family's own head (see the module docstring) instead of one Linear.

    Args:
        backbone: A bare encoder (``AutoModel``) of a model type in :data:`FAMILY_HEADS`. RoBERTa's and
            XLM-R's pooler is removed: their ``*ForSequenceClassification`` has none.
        num_labels, family, dropout, problem_type: as :class:`SequenceClassifier`.

    Raises:
        HfxError: the model type has no family head here.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int, family: str, dropout: float = 0.1,
                 problem_type: str = "") -> None:
        super().__init__(backbone, num_labels, family, dropout, problem_type)
        del self.classifier, self.dropout  # hfx's one-Linear head, replaced below
        if getattr(backbone, "pooler", None) is not None:  # RobertaModel(add_pooling_layer=False) in the family class
            backbone.pooler = None
        self.uses_pooler = False
        self.head_names = FAMILY_HEADS[self.config.model_type]
        for name, module in family_head_modules(self.config).items():
            setattr(self, name, module)
        for module in self.head_modules():
            for sub in module.modules():
                if isinstance(sub, nn.Dropout):
                    sub.p = dropout

    def head_modules(self) -> list[nn.Module]:
        """Every module of the head (what ``finetune.freeze_base`` leaves trainable)."""
        return [self._modules[n] for n in self.head_names]  # ModernBERT's "head" is shadowed by ScoreModel.head

    def _pooled_logits(self, h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, C) from the last hidden states h (B, T, H), as the family's forward computes them."""
        kind = self.config.model_type
        if kind in ("roberta", "xlm-roberta", "electra"):
            return self.classifier(h)  # the head takes h[:, 0] itself
        if kind == "distilbert":
            return self.classifier(self.dropout(torch.relu(self.pre_classifier(h[:, 0]))))  # (B, H) -> (B, C)
        if kind == "deberta-v2":
            return self.classifier(self.dropout(self.pooler(h)))  # ContextPooler reads h[:, 0]
        if self.config.classifier_pooling == "mean":  # modernbert
            mask = torch.ones(h.shape[:2], device=h.device) if attention_mask is None else attention_mask
            pooled = (h * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True)  # (B, H)
        else:
            pooled = h[:, 0]  # (B, H)
        return self.classifier(self.drop(self._modules["head"](pooled)))  # ScoreModel.head is the output layer

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               **kwargs: torch.Tensor) -> tuple[torch.Tensor, BaseModelOutput]:
        """Head outputs (B, C) of ids and mask (B, T), and the backbone's output.

        Raises:
            HfxError: T is longer than the positions the backbone can embed.
        """
        if self.max_positions is not None and input_ids.shape[-1] > self.max_positions:
            raise HfxError(f"inputs of {input_ids.shape[-1]} tokens are longer than the {self.max_positions} positions "
                           f"{type(self.backbone).__name__} can embed; tokenize with truncation=True, "
                           f"max_length={self.max_positions}")
        kwargs.pop("labels", None)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self._pooled_logits(out.last_hidden_state, attention_mask), out
