"""The reward model: hfx's score head (:class:`hfx.heads.ScoreModel`) with one output, read at the last real token.

``RewardModel`` is the head ``finetune`` uses, with ``num_labels=1``: the backbone under its
``base_model_prefix`` and the head under the name transformers gives it (``score`` for decoders,
``classifier`` after the pooler for encoders), so its state dict has the keys of
``AutoModelForSequenceClassification`` with ``num_labels=1`` and a saved folder loads there directly
(:mod:`hfx_plugins.reward.io`). It adds the score shift.

Pooling departs from transformers on purpose. ``*ForSequenceClassification`` finds the last token as the
rightmost id that is not ``pad_token_id``: with ``pad_token_id`` unset it takes the last position (a pad
under right padding), and with pad = EOS it skips the EOS that ends the text (trl appends one) and reads
the token before it, which differs between training with and without padding. Here the last real token
comes from the attention mask, whatever the padding side and pad id (:mod:`hfx.pooling`); where the pad id
is a token no text contains, both rules read the same position (tests/hfx/test_pooling.py).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from hfx.heads import ScoreModel
from hfx.pooling import last_token_index

__all__ = ["RewardModel", "last_real_index"]


last_real_index = last_token_index
"""Position (B,) of the rightmost real token of each row of a (B, T) mask: :func:`hfx.pooling.last_token_index`,
under the name this plugin exports."""


class RewardModel(ScoreModel):
    """A backbone (``AutoModel``) plus a scalar head: ``r = w . h_last`` for decoders, BERT's head for encoders.

    Args:
        backbone: A bare transformers model returning ``last_hidden_state``.
        score: A head taken over from a ``*ForSequenceClassification`` model (num_labels 1), else a new one,
            initialised as transformers does (N(0, ``initializer_range``^2), bias 0).

    The head of a decoder has no bias (as transformers'); ``shift`` is a constant added to every score
    after training (:attr:`shift`, saved by hfx beside the weights, see io.py).
    """

    def __init__(self, backbone: PreTrainedModel, score: nn.Linear | None = None) -> None:
        super().__init__(backbone, 1, head=score, init_std=getattr(backbone.config, "initializer_range", 0.02))
        self.config.problem_type = "regression"
        self.shift = 0.0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: torch.Tensor) -> SequenceClassifierOutput:
        """Scores (B, 1) of a batch of token ids (B, T); ``labels`` are ignored (the trainer's loss uses pairs).

        Raises:
            HfxError: as :meth:`hfx.heads.ScoreModel.logits`.
        """
        logits, out = self.logits(input_ids, attention_mask, **kwargs)  # (B, 1)
        return SequenceClassifierOutput(logits=logits + self.shift, hidden_states=out.hidden_states)
