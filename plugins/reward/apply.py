"""``hfx.apply(model, "reward", ...)``: turn a backbone into a scalar reward model and choose what trains."""

from __future__ import annotations

import re

from torch import nn
from transformers import PreTrainedModel

from hfx.errors import HfxError
from hfx_plugins.prompt_learning import refuse_trunk_reader
from hfx_plugins.reward.config import RewardConfig
from hfx_plugins.reward.head import RewardModel

__all__ = ["apply"]


def _as_reward_model(model: nn.Module) -> RewardModel:
    """Wrap a bare backbone, a ``*ForCausalLM`` (its LM head dropped) or a one-output ``*ForSequenceClassification``."""
    if isinstance(model, RewardModel):
        return model
    if not isinstance(model, PreTrainedModel):
        raise HfxError(f"reward needs a transformers model (AutoModel, *ForCausalLM or *ForSequenceClassification), "
                       f"got {type(model).__name__}")
    if getattr(model.config, "is_encoder_decoder", False):
        raise HfxError("reward does not support encoder-decoder models; use a decoder (smollm2-135m) or an encoder (minilm)")
    refuse_trunk_reader(model, "reward", "the trunk under a new score head")  # the hooks are on the LM, not the trunk
    base = getattr(model, model.base_model_prefix, None)
    if base is None or base is model:
        return RewardModel(model)  # already the bare backbone
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        if head.out_features != 1:
            raise HfxError(f"{type(model).__name__} has {head.out_features} outputs; a reward model has one. Load the "
                           "backbone with AutoModel (or num_labels=1) instead")
        return RewardModel(base, score=head)
    return RewardModel(base)  # *ForCausalLM / *ForMaskedLM: the LM head is not used by a reward model


# Attribute names of a backbone's list of numbered transformer blocks: Llama/Mistral/Qwen2 ``layers``,
# BERT ``layer``, GPT-2 ``h``, others ``blocks``.
BLOCK_LIST_NAME = r"(?:^|\.)(?:layers|layer|h|blocks)"


def _layer_index(name: str) -> int | None:
    """Index of the transformer block a parameter belongs to (the first number after ``layers.`` / ``layer.`` / ``h.``)."""
    m = re.search(BLOCK_LIST_NAME + r"\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _freeze(model: RewardModel, n_last: int) -> None:
    """Train only the head, the final norm / pooler and the last ``n_last`` blocks."""
    names = [n for n, _ in model.backbone.named_parameters()]
    indices = [i for i in map(_layer_index, names) if i is not None]
    if not indices:
        raise HfxError(f"reward.trainable_layers={n_last}: no numbered blocks found in {type(model.backbone).__name__}; "
                       "use -1 (train every weight)")
    first = max(indices) + 1 - n_last
    for name, p in model.backbone.named_parameters():
        idx = _layer_index(name)
        top = idx is None and ("norm" in name.split(".")[0] or name.startswith("pooler"))
        p.requires_grad = (idx is not None and idx >= first) or top
    for p in model.head.parameters():
        p.requires_grad = True


def apply(model: nn.Module, cfg: RewardConfig) -> RewardModel:
    """Return ``model`` as a :class:`RewardModel` (one score per text) with ``cfg.trainable_layers`` trainable.

    Args:
        model: A bare backbone (``AutoModel``), a ``*ForCausalLM`` (the policy's architecture: its trunk is
            kept, the LM head dropped), a ``*ForSequenceClassification`` with one output, or a RewardModel.
        cfg: The plugin config.

    Raises:
        HfxError: an encoder-decoder, a classifier with more than one output, or ``trainable_layers`` on a
            model without numbered blocks.
    """
    reward = _as_reward_model(model)
    if cfg.trainable_layers >= 0:
        _freeze(reward, cfg.trainable_layers)
    else:
        for p in reward.parameters():
            p.requires_grad = True
    return reward
