"""``hfx.apply(model, "ppo", ...)``: give a causal LM a value head on its own trunk.

The value head is one ``Linear(hidden, 1)`` applied to the last hidden state at every position, stored as
``model.ppo_value_head``. It is PPO's memory-lean critic: the values come from the same forward pass as the
policy's logits, so PPO keeps one transformer in memory (plus the reward model) instead of trl's two more
(a separate value model initialised from the reward model, and a reference copy). The head starts at zero,
so the first values are 0 and the first advantages are the (whitened) rewards-to-go.
"""

from __future__ import annotations

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.ppo.config import PPOConfig

__all__ = ["HEAD_NAME", "ValueHead", "apply", "value_head"]

HEAD_NAME = "ppo_value_head"


class ValueHead(nn.Module):
    """V(s_t) = w . h_t + b, read from the trunk's last hidden state h_t (B, T, H) -> (B, T)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) last hidden states -> (B, T) values, in the head's dtype (fp32 unless the head was cast)."""
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def value_head(model: nn.Module) -> ValueHead | None:
    """The value head ``hfx.apply(model, "ppo")`` added, or None."""
    head = getattr(model, HEAD_NAME, None)
    return head if isinstance(head, ValueHead) else None


def apply(model: nn.Module, cfg: PPOConfig) -> nn.Module:
    """Add a zero-initialised value head to ``model`` (in place; trainable) when ``cfg.value_model == "head"``.

    Raises:
        HfxError: the model has no ``config.hidden_size`` (not a transformers model) or already has a head.
    """
    if cfg.value_model != "head":
        return model
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if not isinstance(hidden, int):
        raise HfxError(f"ppo: {type(model).__name__} has no config.hidden_size; give a transformers causal LM")
    if value_head(model) is not None:
        raise HfxError("ppo: this model already has a value head (hfx.apply(model, 'ppo') was called before)")
    param = next(model.parameters())
    head = ValueHead(hidden).to(param.device)
    model.add_module(HEAD_NAME, head)
    return model
