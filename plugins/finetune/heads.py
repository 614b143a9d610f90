"""The classification head of ``finetune``: hfx's score head (:class:`hfx.heads.ScoreModel`) plus the task loss.

``SequenceClassifier`` puts ``num_labels`` outputs on a bare transformers backbone (``AutoModel``); the
pooling (pooler / first token for encoders, the last real token for decoders) and the layout of the saved
weights (the keys of ``AutoModelForSequenceClassification``, so :func:`hfx_plugins.finetune.io.save` writes
a folder transformers loads directly) are :mod:`hfx.heads`'. This class adds transformers' loss for
``labels`` (:mod:`hfx_plugins.finetune.losses`).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from hfx.heads import ScoreModel
from hfx_plugins.finetune.losses import classification_loss, infer_problem_type

__all__ = ["SequenceClassifier"]


class SequenceClassifier(ScoreModel):
    """A backbone plus a pooled linear head and the matching loss.

    Args:
        backbone: A bare transformers model (``AutoModel``) returning ``last_hidden_state``.
        num_labels: Outputs of the head (1 = regression).
        family: "encoder" or "decoder" (decides the pooling, see :mod:`hfx.heads`).
        dropout: Dropout before the head (encoders, as in BERT; decoders use none, as in transformers).
        problem_type: "", "regression", "single_label_classification" or "multi_label_classification"; empty
            means inferred from the labels by transformers' rule.

    A new head keeps PyTorch's default ``nn.Linear`` initialisation (transformers draws N(0, 0.02^2)); the
    trained numbers in this plugin's README were measured with it.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int, family: str, dropout: float = 0.1,
                 problem_type: str = "") -> None:
        super().__init__(backbone, num_labels, family=family, dropout=dropout)
        self.config.problem_type = problem_type or None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: torch.Tensor) -> SequenceClassifierOutput:
        """Logits (B, C) of a batch of ids and mask (B, T), plus the loss when ``labels`` are given.

        Raises:
            HfxError: T is longer than the positions the backbone can embed, or a row has no real token.
        """
        logits, out = self.logits(input_ids, attention_mask, **kwargs)  # (B, C)
        loss = None
        if labels is not None:
            problem = self.config.problem_type or infer_problem_type(logits.shape[-1], labels)
            loss = classification_loss(logits, labels, problem)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
