"""Per-token rewards, masks, whitening and GAE for one rollout.

Follows trl 1.12.0's ``PPOTrainer.train`` (``ppo_trainer.py`` L757-799) and ``masked_whiten``
(``experimental/utils.py``), with one change of default: the score goes on the **last real token** of the
response (its stop token, or its last token when it has none) instead of the position after it.

Why: the action that earns the score is choosing the last token. trl, as lm-human-preferences, puts the
score on the first position *after* EOS (``score_position="eos+1"``), a position whose value is computed
from a pad token and which reaches EOS only through gamma * lambda * A_{t+1}: with lambda < 1 the last real
token sees only part of the score, and the value model is trained on one position the policy never acts at.
``"eos+1"`` is kept, with trl's masks, for the parity check.

Masks come from the response lengths, never from pad ids, so a tokenizer whose pad token is its EOS works.
"""

from __future__ import annotations

import torch

__all__ = ["gae", "masked_mean", "masked_var", "masked_whiten", "per_token_rewards", "response_masks",
           "score_index"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true: a () tensor (trl's ``masked_mean`` without an axis).

    Args:
        values: (B, T) per-token values.
        mask: (B, T) bool or 0/1, same shape; at least one true entry (else the result is NaN).
    """
    return (values * mask).sum() / mask.sum()


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is true: a () tensor, with Bessel's correction by default (as trl).

    Args:
        values: (B, T) per-token values.
        mask: (B, T) bool or 0/1; with ``unbiased``, at least two true entries (else inf or NaN, as trl).
        unbiased: multiply by n / (n - 1), n the number of true entries.
    """
    centered = values - masked_mean(values, mask)
    var = masked_mean(centered**2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries; ``shift_mean=False`` adds the mean back (trl).

    trl 1.12.0's ``masked_whiten``: the mean and the (unbiased) variance are taken over the true entries of
    ``mask`` only, but every entry of ``values`` is transformed (callers zero the invalid ones after).

    Args:
        values: (B, T) rewards or advantages.
        mask: (B, T) valid positions.
        shift_mean: False scales only (trl's reward whitening keeps the mean).

    Returns:
        (B, T), the same shape as ``values``.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def response_masks(seq_lengths: torch.Tensor, length: int, score_position: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the tokens the policy acted at and of the positions that carry a value.

    Args:
        seq_lengths: (B,) index of the last real token of each response (its stop token, else length - 1).
        length: T, the padded response length.
        score_position: "last" (both masks end at the last real token) or "eos+1" (trl: values run one
            position further, to where the score sits).

    Returns:
        ``(policy_mask, value_mask)``, each (B, T) bool, true on valid positions.
    """
    idx = torch.arange(length, device=seq_lengths.device).unsqueeze(0)  # (1, T)
    policy_mask = idx <= seq_lengths.unsqueeze(1)  # (B, T)
    extra = 1 if score_position == "eos+1" else 0
    return policy_mask, idx <= (seq_lengths + extra).unsqueeze(1)


def score_index(seq_lengths: torch.Tensor, length: int, score_position: str) -> torch.Tensor:
    """(B,) position that receives the score: the last real token, or trl's one after it when there is room."""
    if score_position == "last":
        return seq_lengths
    after = seq_lengths + 1
    return torch.where(after < length, after, seq_lengths)


def per_token_rewards(kl: torch.Tensor, scores: torch.Tensor, seq_lengths: torch.Tensor, kl_coef: float,
                      policy_mask: torch.Tensor, score_position: str = "last") -> tuple[torch.Tensor, torch.Tensor]:
    """r_t = -beta * KL_t on every valid token, plus the score at :func:`score_index`.

    Args:
        kl: (B, T) per-token KL estimate (see :func:`hfx_plugins.ppo.kl.kl_penalty`).
        scores: (B,) reward-model score of each response (after any missing-EOS penalty).
        seq_lengths: (B,) index of each response's last real token.
        kl_coef: beta.
        policy_mask: (B, T) valid tokens; the KL is zero elsewhere (trl sets both log-probs to 1.0 there).
        score_position: "last" or "eos+1".

    Returns:
        ``(rewards, non_score_reward)``, each (B, T).
    """
    non_score = -kl_coef * kl.masked_fill(~policy_mask, 0.0)  # (B, T)
    rewards = non_score.clone()
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, score_index(seq_lengths, rewards.size(1), score_position)] += scores
    return rewards, non_score


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015, https://arxiv.org/abs/1506.02438).

    delta_t = r_t + gamma V_{t+1} - V_t with V_T = 0 (no bootstrap after the last position), and
    A_t = delta_t + gamma lambda A_{t+1}; returns R_t = A_t + V_t (trl ``ppo_trainer.py`` L786-799).
    Values must already be zero after each response's last value position.

    Args:
        rewards: (B, T) per-token rewards.
        values: (B, T) V(s_t) from the rollout.
        gamma: discount.
        lam: GAE's lambda.

    Returns:
        ``(advantages, returns)``, each (B, T).
    """
    length = rewards.size(1)
    last = torch.zeros_like(rewards[:, 0])  # (B,)
    out = []
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t < length - 1 else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        out.append(last)
    advantages = torch.stack(out[::-1], dim=1)  # (B, T)
    return advantages, advantages + values
