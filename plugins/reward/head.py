"""The reward model: a backbone with a one-output score head, read at the last real token.

``RewardModel`` keeps the backbone under its ``base_model_prefix`` and the head under the name
transformers gives it (``score`` for decoders, ``classifier`` after the pooler for encoders), so its state
dict has the keys of ``AutoModelForSequenceClassification`` with ``num_labels=1`` and a saved folder loads
there directly (:mod:`hfx_plugins.reward.io`).

Pooling departs from transformers on purpose. ``*ForSequenceClassification`` finds the last token as the
rightmost id that is not ``pad_token_id``: with ``pad_token_id`` unset it takes the last position (a pad
under right padding), and with pad = EOS it skips the EOS that ends the text (trl appends one) and reads
the token before it, which differs between training with and without padding (trl #2758, RLHFlow #49).
Here the last real token comes from the attention mask, whatever the padding side and pad id
(:mod:`hfx.pooling`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from hfx.models.loading import model_family
from hfx.pooling import gather_last, last_token_index

__all__ = ["RewardModel", "last_real_index"]


last_real_index = last_token_index
"""Position (B,) of the rightmost real token of each row of a (B, T) mask: :func:`hfx.pooling.last_token_index`,
under the name this plugin exports."""


class RewardModel(nn.Module):
    """A backbone (``AutoModel``) plus a scalar head: ``r = w . h_last`` for decoders, BERT's head for encoders.

    Args:
        backbone: A bare transformers model returning ``last_hidden_state``.
        score: A head taken over from a ``*ForSequenceClassification`` model (num_labels 1), else a new one.

    The head of a decoder has no bias (as transformers'); ``shift`` is a constant added to every score
    after training (:attr:`shift`, a buffer saved in the state dict only by hfx, see io.py).
    """

    def __init__(self, backbone: PreTrainedModel, score: nn.Linear | None = None) -> None:
        super().__init__()
        self.prefix = backbone.base_model_prefix
        self.family = model_family(backbone.config)
        self.config = backbone.config
        self.config.num_labels = 1
        self.config.problem_type = "regression"
        setattr(self, self.prefix, backbone)
        hidden = backbone.config.hidden_size
        self.uses_pooler = self.family == "encoder" and getattr(backbone, "pooler", None) is not None
        head = score if score is not None else nn.Linear(hidden, 1, bias=self.family == "encoder")
        if score is None:
            nn.init.normal_(head.weight, std=getattr(self.config, "initializer_range", 0.02))
            if head.bias is not None:
                nn.init.zeros_(head.bias)
        if self.family == "encoder":
            drop = getattr(self.config, "classifier_dropout", None)
            self.dropout = nn.Dropout(drop if drop is not None else self.config.hidden_dropout_prob)
            self.classifier = head
        else:
            self.score = head
        self.shift = 0.0

    @property
    def backbone(self) -> PreTrainedModel:
        return getattr(self, self.prefix)

    @property
    def head(self) -> nn.Linear:
        return self.classifier if self.family == "encoder" else self.score

    def gradient_checkpointing_enable(self, **kwargs: object) -> None:
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: torch.Tensor) -> SequenceClassifierOutput:
        """Scores (B, 1) of a batch of token ids (B, T); no mask means every position is real."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs.pop("labels", None)
        kwargs.pop("use_cache", None)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs) \
            if self.family == "decoder" else self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if self.family == "encoder":
            pooled = out.pooler_output if self.uses_pooler else out.last_hidden_state[:, 0]  # (B, H)
            logits = self.classifier(self.dropout(pooled))  # (B, 1)
        else:
            logits = self.score(gather_last(out.last_hidden_state, attention_mask))  # (B, H) -> (B, 1)
        return SequenceClassifierOutput(logits=logits + self.shift, hidden_states=out.hidden_states)
