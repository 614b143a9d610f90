"""PPO's clipped policy loss and clipped value loss, as trl 1.12.0 (``ppo_trainer.py`` L820-847).

Policy (Schulman et al. 2017, https://arxiv.org/abs/1707.06347, eq. 7), with rho = exp(log p_new - log p_old):
    L_pg = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))
Value (the clipped form of OpenAI baselines' PPO2, kept by lm-human-preferences and trl):
    L_vf = 0.5 mean_t max((V_t - R_t)^2, (clip(V_t, V_old - c, V_old + c) - R_t)^2)
Means are taken over the valid tokens of the mini-batch (all tokens of all its responses pooled).
"""

from __future__ import annotations

import torch

from hfx_plugins.ppo.advantages import masked_mean

__all__ = ["policy_loss", "value_loss"]


def policy_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss, L = mean over valid tokens of max(-A rho, -A clip(rho, 1 - eps, 1 + eps)).

    Schulman et al. 2017 (https://arxiv.org/abs/1707.06347) eq. 7, negated to be minimised, with trl 1.12.0's
    masked mean over tokens (``ppo_trainer.py``'s ``pg_losses``).

    Args:
        new_logprobs: (B, T) log-probs of the rollout's tokens under the current policy.
        old_logprobs: (B, T) the same at rollout time.
        advantages: (B, T) (whitened) advantages.
        mask: (B, T) bool, the tokens the policy acted at.
        cliprange: eps.

    Returns:
        ``(loss, stats)``: the scalar loss and detached ``clipfrac`` (share of tokens whose clipped term
        won), ``approxkl`` (0.5 mean (log rho)^2) and ``ratio`` (mean rho), all over valid tokens.
    """
    diff = (new_logprobs - old_logprobs).masked_fill(~mask, 0.0)  # (B, T) log rho; 0 off the mask, as trl
    ratio = torch.exp(diff)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(loss1, loss2), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((loss2 > loss1).float(), mask),
                 "approxkl": 0.5 * masked_mean(diff**2, mask), "ratio": masked_mean(ratio, mask)}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss, 0.5 * mean over valid positions of max((V - R)^2, (clip(V, V_old +- c) - R)^2).

    As trl 1.12.0 (``ppo_trainer.py``'s ``vf_losses``) and OpenAI's baselines PPO2.

    Args:
        values: (B, T) current value predictions.
        old_values: (B, T) the rollout's values.
        returns: (B, T) GAE returns.
        mask: (B, T) bool, the positions that carry a value.
        cliprange_value: c.

    Returns:
        ``(loss, stats)``: the scalar loss and detached ``vf_clipfrac``.
    """
    values = values.masked_fill(~mask, 0.0)
    clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    loss1 = torch.square(values - returns)
    loss2 = torch.square(clipped - returns)
    loss = 0.5 * masked_mean(torch.max(loss1, loss2), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((loss2 > loss1).float(), mask)}
    return loss, stats
