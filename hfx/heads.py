"""The score head: a bare backbone plus a pooled linear layer, in transformers' ``*ForSequenceClassification`` layout.

:class:`ScoreModel` is the one sequence-level head of hfx: ``finetune`` puts it on a backbone with
``num_labels`` outputs (and adds its classification loss), ``reward`` with one output (and adds the score
shift). What it reads, as transformers' classes do:

- encoders with a pooler (BERT family): pooler output (tanh(W h_CLS)) -> dropout -> ``classifier``
  (``BertForSequenceClassification``);
- encoders without one: the first token's hidden state -> dropout -> ``classifier``;
- decoders: the hidden state of the last real token -> ``score`` (no bias), since a causal model has seen
  the whole text only at its last position (``LlamaForSequenceClassification``). The last real token comes
  from the attention mask (:mod:`hfx.pooling`, which says where and why that departs from transformers'
  pad-id rule); without a mask, from the ids by transformers' rule. With a mask, a decoder that takes
  ``position_ids`` gets them from the mask (``cumsum - 1``, pads at 0), as transformers' ``generate`` computes
  them: a left-padded row then sits at the positions it has alone. transformers' classes number every column
  from 0, which shifts a left-padded row of a model with absolute positions (GPT-2's learned ``wpe``) and
  changes its score; rotary models (Llama) see only relative positions and agree either way.

The backbone is stored under its ``base_model_prefix`` (``bert``, ``model``, ``transformer``) and the head
under the name transformers uses, so the state dict has the keys of ``AutoModelForSequenceClassification``
and a ``save_pretrained`` of that class with these weights loads without hfx.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from hfx.errors import HfxError
from hfx.models.limits import position_limit
from hfx.models.loading import model_family
from hfx.pooling import gather_last, real_token_mask

__all__ = ["ScoreModel"]


class ScoreModel(nn.Module):
    """A backbone (``AutoModel``) plus a pooled linear head with ``num_labels`` outputs.

    Args:
        backbone: A bare transformers model returning ``last_hidden_state``.
        num_labels: Outputs of the head (1 for a regression or a reward score).
        family: "encoder" or "decoder" (decides the pooling, see the module docstring); default from the config.
        dropout: Dropout before an encoder's head; None means transformers' rule (``classifier_dropout``,
            else ``hidden_dropout_prob``). Decoders have none, as in transformers.
        head: A linear layer to take over (from a ``*ForSequenceClassification``), else a new one: bias for
            encoders, none for decoders, as transformers.
        init_std: Initialise a new head's weight from N(0, init_std^2) and its bias at 0, as transformers'
            ``_init_weights`` (``initializer_range``); None keeps PyTorch's default ``nn.Linear`` init.

    Raises:
        HfxError: ``head`` has another number of outputs than ``num_labels``.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int, *, family: str | None = None,
                 dropout: float | None = None, head: nn.Linear | None = None, init_std: float | None = None) -> None:
        super().__init__()
        self.prefix = backbone.base_model_prefix
        self.family = family or model_family(backbone.config)
        self.config = backbone.config
        self.config.num_labels = num_labels
        setattr(self, self.prefix, backbone)
        self.max_positions = position_limit(backbone)  # usable positions (RoBERTa's offset removed), or None
        encoder = self.family == "encoder"
        self.uses_pooler = encoder and getattr(backbone, "pooler", None) is not None
        if head is not None and head.out_features != num_labels:
            raise HfxError(f"the head has {head.out_features} outputs; {num_labels} were asked for")
        if head is None:
            head = nn.Linear(backbone.config.hidden_size, num_labels, bias=encoder)
            if init_std is not None:
                nn.init.normal_(head.weight, std=init_std)
                if head.bias is not None:
                    nn.init.zeros_(head.bias)
        if encoder:
            if dropout is None:
                drop = getattr(self.config, "classifier_dropout", None)
                dropout = drop if drop is not None else getattr(self.config, "hidden_dropout_prob", 0.0)
            self.dropout = nn.Dropout(dropout)
            self.classifier = head
        else:
            self.score = head

    @property
    def backbone(self) -> PreTrainedModel:
        """The transformer trunk, under transformers' attribute name (``bert``, ``model``, ...)."""
        return getattr(self, self.prefix)

    @property
    def head(self) -> nn.Linear:
        """The output layer: ``classifier`` (encoder) or ``score`` (decoder), transformers' names."""
        return self.classifier if self.family == "encoder" else self.score

    def gradient_checkpointing_enable(self, **kwargs: object) -> None:
        """Turn on the backbone's gradient checkpointing (transformers' method; ``kwargs`` passed on)."""
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def _takes_positions(self) -> bool:
        """Whether the backbone's forward takes ``position_ids`` (GPT-2, Llama, ...; not every decoder does)."""
        return "position_ids" in inspect.signature(self.backbone.forward).parameters

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               **kwargs: torch.Tensor) -> tuple[torch.Tensor, BaseModelOutput]:
        """Head outputs (B, C) of ids and mask (B, T), and the backbone's output.

        A decoder runs without a key/value cache (one forward pass, nothing to reuse).

        Raises:
            HfxError: T is longer than the positions the backbone can embed, or a row has no real token.
        """
        if self.max_positions is not None and input_ids.shape[-1] > self.max_positions:
            raise HfxError(f"inputs of {input_ids.shape[-1]} tokens are longer than the {self.max_positions} positions "
                           f"{type(self.backbone).__name__} can embed; tokenize with truncation=True, "
                           f"max_length={self.max_positions}")
        kwargs.pop("labels", None)
        if self.family == "encoder":
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            pooled = out.pooler_output if self.uses_pooler else out.last_hidden_state[:, 0]  # (B, H)
            return self.classifier(self.dropout(pooled)), out  # (B, C)
        kwargs["use_cache"] = False
        if attention_mask is not None and "position_ids" not in kwargs and self._takes_positions():
            # transformers' generate: position = number of real tokens before it; pads get 0 (never read)
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        mask = real_token_mask(input_ids, attention_mask, self.config.pad_token_id,
                               getattr(self.config, "eos_token_id", None))  # (B, T)
        return self.score(gather_last(out.last_hidden_state, mask)), out  # (B, H) -> (B, C)
