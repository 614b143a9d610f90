"""The per-token KL penalty of RLHF and the adaptive KL controller.

The policy is kept near the reference model by a reward of ``-beta * KL`` on every response token
(Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, eq. 2). The per-token KL is estimated from the
log-probabilities of the sampled token only (Schulman, http://joschu.net/blog/kl-approx.html):

- k1 = log p(x) - log p_ref(x): unbiased; one token's value may be negative;
- k3 = (r - 1) - log r with r = p_ref(x) / p(x): unbiased and never negative.

Both are computed from log-probs of the *same* temperature-scaled distributions that the tokens were sampled
from (see :mod:`hfx_plugins.ppo.rollout`), so that their mean over samples is the KL between the sampling
distributions and cannot turn negative from a mismatch between how the tokens were drawn and how they are
scored.
"""

from __future__ import annotations

import math

import torch

__all__ = ["AdaptiveKLController", "kl_penalty"]


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate of the policy from the reference, as trl 1.12.0 (``ppo_trainer.py`` L773-777).

    Args:
        logprobs: (B, T) log p(x_t) of the sampled tokens under the policy.
        ref_logprobs: (B, T) the same under the reference model.
        estimator: "k1" or "k3".

    Returns:
        (B, T) the KL estimate per token (nats).
    """
    logr = ref_logprobs - logprobs  # (B, T) log r, r = p_ref / p
    if estimator == "k1":
        return -logr
    return (logr.exp() - 1) - logr  # trl's expression (not expm1), for bit-level parity


class AdaptiveKLController:
    """beta_{t+1} = beta_t * (1 + K_beta * e_t), e_t = clip(KL_t / target - 1, -0.2, 0.2), K_beta = n / horizon.

    Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593) §2.2, as trl <= 0.11's ``AdaptiveKLController``:
    ``n`` is the number of episodes (responses) in the update and ``KL_t`` the mean KL per response.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move beta after an update whose responses had mean KL ``current_kl`` (nats); return the new beta."""
        if math.isfinite(current_kl):
            error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
