"""Reward-model losses: InstructGPT's K-way ranking loss and trl's pairwise loss (with margin and centering).

For a pair p = (w, l) of one prompt, with scores r and an optional margin m:

    t_p = -log sigma(r_w - r_l - m) + c * (r_w + r_l)^2

- ranking (Ouyang et al. 2022, https://arxiv.org/abs/2203.02155, eq. 1): all C(K,2) pairs of a prompt are one
  batch element, loss = mean over prompts of (1/C(K,2)) sum_p t_p. Each prompt's K completions go through the
  model once (K forward passes, not 2 C(K,2)), and a prompt counts once however many pairs it has, which is
  what keeps the paper's model from overfitting. Departure: with ties a prompt has fewer than C(K,2) pairs and
  its sum is divided by its number of untied pairs.
- pairwise (trl ``RewardTrainer.compute_loss``, trl 1.16 ``reward_trainer.py``): the mean of t_p over all
  pairs of the batch, each pair on its own.

The centering term c (r_w + r_l)^2 is trl's ``center_rewards_coefficient`` term (Eisenstein et al. 2023,
https://arxiv.org/abs/2312.09244), written per pair as trl writes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pair_terms", "preference_loss"]


def pair_terms(scores: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor,
               margin: torch.Tensor | None = None, center_rewards_coefficient: float = 0.0) -> torch.Tensor:
    """Per-pair loss terms t_p (P,) from scores (N,) and pair indices winners, losers (P,) into them."""
    r_w, r_l = scores[winners], scores[losers]  # (P,), (P,)
    diff = r_w - r_l if margin is None else r_w - r_l - margin
    terms = -F.logsigmoid(diff)  # (P,)
    if center_rewards_coefficient:
        terms = terms + center_rewards_coefficient * (r_w + r_l) ** 2
    return terms


def preference_loss(scores: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor, groups: torch.Tensor,
                    margin: torch.Tensor | None = None, loss_type: str = "ranking",
                    center_rewards_coefficient: float = 0.0) -> torch.Tensor:
    """The reward-model loss of one batch (a scalar).

    Args:
        scores: (N,) score of every completion of the batch.
        winners: (P,) index into ``scores`` of each pair's preferred completion.
        losers: (P,) index of each pair's other completion.
        groups: (P,) prompt (batch element) of each pair, 0 .. G-1.
        margin: (P,) margins, or None.
        loss_type: "ranking" (mean over prompts of the mean over their pairs) or "pairwise" (mean over pairs).
        center_rewards_coefficient: trl's centering coefficient (0 = off).

    Returns:
        A 0-d tensor.
    """
    terms = pair_terms(scores, winners, losers, margin, center_rewards_coefficient)  # (P,)
    if loss_type == "pairwise":
        return terms.mean()
    n_groups = int(groups.max()) + 1
    per_group = torch.zeros(n_groups, dtype=terms.dtype, device=terms.device).index_add(0, groups, terms)  # (G,)
    counts = torch.bincount(groups, minlength=n_groups).to(terms.dtype)  # (G,)
    return (per_group / counts).mean()
