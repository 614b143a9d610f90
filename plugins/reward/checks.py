"""``hfx validate plugin=reward``: the pairwise loss against trl ``RewardTrainer.compute_loss`` itself.

trl's method is called unbound on a stand-in trainer (the attributes it reads: ``model.training``,
``args.center_rewards_coefficient``, an accelerator whose gathers are the identity on one process, the
metric buffers) with a stand-in model whose logits are the given scores, chosen first and rejected second
as trl's collator stacks them. So the check compares the two formulas on the same scores, not two models.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from hfx.validate import Check
from hfx_plugins.reward.losses import preference_loss

__all__ = ["checks", "trl_pairwise_loss"]


class _Scores(torch.nn.Module):
    """A model whose output logits (2P, 1) are fixed scores: chosen rows first, then rejected rows."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.training = False

    def forward(self, **inputs: Any) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.logits)


def trl_pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                      center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """trl's ``RewardTrainer.compute_loss`` (the installed trl) on given chosen/rejected scores (P,)."""
    from collections import defaultdict

    from trl import RewardTrainer

    model = _Scores(torch.cat([chosen, rejected])[:, None])  # (2P, 1)
    identity = SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x)
    stand_in = SimpleNamespace(model=model, args=SimpleNamespace(center_rewards_coefficient=center_rewards_coefficient),
                               accelerator=identity, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                               _total_train_tokens=0, _tp_size=1)
    inputs: dict[str, torch.Tensor] = {"attention_mask": torch.ones(2 * len(chosen), 1)}
    if margin is not None:
        inputs["margin"] = margin
    return RewardTrainer.compute_loss(stand_in, model, inputs)


def _pairwise_diff(with_margin: bool, center: float | None) -> float:
    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(16, generator=g) * 3, torch.randn(16, generator=g) * 3  # (P,), (P,)
    margin = torch.rand(16, generator=g) if with_margin else None
    ref = trl_pairwise_loss(chosen, rejected, margin, center)
    scores = torch.cat([chosen, rejected])  # (2P,)
    idx = torch.arange(16)
    ours = preference_loss(scores, idx, idx + 16, idx, margin, "pairwise", center or 0.0)
    return float((ours - ref).abs())


def checks() -> list[Check]:
    """``hfx validate plugin=reward``: the pairwise loss (margin, centering) vs trl's RewardTrainer."""
    return [
        Check("pairwise loss vs trl RewardTrainer.compute_loss", "trl", 1e-6, lambda: _pairwise_diff(False, None)),
        Check("pairwise loss with margin vs trl", "trl", 1e-6, lambda: _pairwise_diff(True, None)),
        Check("pairwise loss with center_rewards_coefficient=0.01 vs trl", "trl", 1e-6, lambda: _pairwise_diff(True, 0.01)),
    ]
