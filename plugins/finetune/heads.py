"""An in-house sequence-classification head that saves in transformers' own layout.

``SequenceClassifier`` puts a head on a bare transformers backbone (``AutoModel``):

- encoders with a pooler (BERT family): pooler output (tanh(W h_CLS)) -> dropout -> ``classifier``;
- encoders without one: the first token's hidden state -> dropout -> ``classifier``;
- decoders: the hidden state of the last real token -> ``score`` (no bias), since a causal model has seen
  the whole text only at its last position. The last real token comes from the attention mask
  (:mod:`hfx.pooling`), not from ``pad_token_id`` as in transformers: that rule reads a pad position when
  the pad id is unset, and cuts the EOS when the pad id equals EOS.

The backbone is stored under its ``base_model_prefix`` (``bert``, ``model``, ``transformer``) and the head
under the name transformers uses, so the state dict has the keys of ``AutoModelForSequenceClassification``
and :func:`hfx_plugins.finetune.io.save` writes a folder transformers loads directly.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from hfx.errors import HfxError
from hfx.models.limits import position_limit
from hfx.pooling import gather_last, real_token_mask
from hfx_plugins.finetune.losses import classification_loss, infer_problem_type

__all__ = ["SequenceClassifier"]


class SequenceClassifier(nn.Module):
    """A backbone plus a pooled linear head and the matching loss.

    Args:
        backbone: A bare transformers model (``AutoModel``) returning ``last_hidden_state``.
        num_labels: Outputs of the head (1 = regression).
        family: "encoder" or "decoder" (decides the pooling, see the module docstring).
        dropout: Dropout before the head (encoders, as in BERT; decoders use none, as in transformers).
        problem_type: "", "regression", "single_label_classification" or "multi_label_classification"; empty
            means inferred from the labels by transformers' rule.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int, family: str, dropout: float = 0.1,
                 problem_type: str = "") -> None:
        super().__init__()
        self.prefix = backbone.base_model_prefix
        self.family = family
        self.config = backbone.config
        self.config.num_labels = num_labels
        self.config.problem_type = problem_type or None
        setattr(self, self.prefix, backbone)
        self.max_positions = position_limit(backbone)  # usable positions (RoBERTa's offset removed), or None
        hidden = backbone.config.hidden_size
        self.uses_pooler = family == "encoder" and getattr(backbone, "pooler", None) is not None
        if family == "encoder":
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(hidden, num_labels)
        else:
            self.score = nn.Linear(hidden, num_labels, bias=False)

    @property
    def backbone(self) -> PreTrainedModel:
        return getattr(self, self.prefix)

    @property
    def head(self) -> nn.Linear:
        return self.classifier if self.family == "encoder" else self.score

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: torch.Tensor) -> SequenceClassifierOutput:
        """Logits (B, C) of a batch of ids and mask (B, T), plus the loss when ``labels`` are given.

        Raises:
            HfxError: T is longer than the positions the backbone can embed, or a row has no real token.
        """
        if self.max_positions is not None and input_ids.shape[-1] > self.max_positions:
            raise HfxError(f"inputs of {input_ids.shape[-1]} tokens are longer than the {self.max_positions} positions "
                           f"{type(self.backbone).__name__} can embed; tokenize with truncation=True, "
                           f"max_length={self.max_positions}")
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if self.family == "encoder":
            pooled = out.pooler_output if self.uses_pooler else out.last_hidden_state[:, 0]  # (B, H)
            logits = self.classifier(self.dropout(pooled))  # (B, C)
        else:
            mask = real_token_mask(input_ids, attention_mask, self.config.pad_token_id,
                                   getattr(self.config, "eos_token_id", None))  # (B, T)
            pooled = gather_last(out.last_hidden_state, mask)  # (B, H)
            logits = self.score(pooled)  # (B, C)
        loss = None
        if labels is not None:
            problem = self.config.problem_type or infer_problem_type(logits.shape[-1], labels)
            loss = classification_loss(logits, labels, problem)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
