"""GRPO's clipped token-level surrogate (four normalisations) and RLOO's clipped sequence-level surrogate.

GRPO (trl 1.16 ``GRPOTrainer._compute_loss``, ``importance_sampling_level="token"``), per token, with
rho = exp(log p - log p_old) and the completion's advantage A:

    l_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A) + beta * rho_t * k3_t,
    k3_t = exp(log p_ref - log p) - (log p_ref - log p) - 1        (Schulman's k3, http://joschu.net/blog/kl-approx.html)

the ratio rho_t on the KL term being trl's ``use_bias_correction_kl`` (its default, DeepSeek-V3.2,
https://arxiv.org/abs/2512.02556): it makes the KL gradient the unbiased reverse-KL gradient, and changes the
gradient even where rho = 1 (rho is differentiable: it adds k3 * grad log p).

then averaged by ``loss_type``: "grpo" mean over each completion's tokens, then over completions (Shao et al.
2024); "bnpo" mean over all the step's tokens; "dr_grpo" sum / (B * max_completion_length) (Liu et al. 2025,
https://arxiv.org/abs/2503.20783: no length bias); "dapo" sum / ``num_items`` (the generation batch's tokens
divided by the steps it is split into, so every token of the batch weighs the same; Yu et al. 2025,
https://arxiv.org/abs/2503.14476).

RLOO (trl 1.16 ``RLOOTrainer._compute_loss``): one ratio per completion, rho = exp(sum_t log p - sum_t log p_old),
loss = mean over completions of -min(rho A, clip(rho) A); its KL is in the reward (:func:`sequence_kl`).
"""

from __future__ import annotations

import torch

from hfx.errors import HfxError
from hfx_plugins.grpo.config import LOSS_TYPES

__all__ = ["grpo_loss", "k3", "rloo_loss", "sequence_kl"]


def k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """(B, T) k3 estimate of KL(pi || ref) per token, r - 1 - log r with r = p_ref / p (never negative)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def sequence_kl(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) k1 KL of each completion, sum_t (log p - log p_ref) over its tokens (RLOO's reward penalty, as trl)."""
    return ((logps - ref_logps) * mask).sum(-1)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              epsilon: float, epsilon_high: float, loss_type: str = "dapo", beta: float = 0.0,
              ref_logps: torch.Tensor | None = None, max_completion_length: int | None = None,
              num_items: float | None = None, use_bias_correction_kl: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's loss of one optimizer step, as trl 1.16.

    Args:
        logps: (B, T) log-probs of the completion tokens under the current policy (with gradients).
        old_logps: (B, T) the same at generation time (detached).
        advantages: (B,) one per completion.
        mask: (B, T) 1 on the tokens that count (through the first EOS).
        epsilon, epsilon_high: the ratio is clipped to [1 - epsilon, 1 + epsilon_high].
        loss_type: "grpo", "bnpo", "dr_grpo" or "dapo" (module docstring).
        beta: weight of the k3 KL to ``ref_logps`` (0: no KL term).
        ref_logps: (B, T) the reference's log-probs (needed when beta > 0).
        max_completion_length: dr_grpo's divisor per completion (default T).
        num_items: dapo's divisor (default: the tokens of this step, mask.sum()).
        use_bias_correction_kl: multiply the k3 term by the ratio (trl's default).

    Returns:
        ``(loss, per_token_loss (B, T), stats)``; ``stats``: detached ``clip_ratio`` (share of valid tokens whose
        clipped term won) and ``kl`` (mean k3 over valid tokens; 0 without beta).

    Raises:
        HfxError: an unknown loss_type, or beta > 0 without ref_logps.
    """
    if loss_type not in LOSS_TYPES:
        raise HfxError(f"grpo loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)  # (B, T)
    a = advantages.unsqueeze(1)  # (B, 1)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    per_token = -torch.min(ratio * a, clipped * a)  # (B, T)
    kl = torch.zeros_like(per_token)
    if beta != 0.0:
        if ref_logps is None:
            raise HfxError("grpo_loss: beta > 0 needs ref_logps (the reference's log-probs)")
        kl = k3(logps, ref_logps)
        if use_bias_correction_kl:
            kl = kl * ratio
        per_token = per_token + beta * kl
    tokens = mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()  # (B,) -> ()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * (max_completion_length or per_token.size(1)))
    else:
        loss = (per_token * mask).sum() / (tokens if num_items is None else max(num_items, 1.0))
    with torch.no_grad():
        won = ((ratio < 1 - epsilon) & (a < 0)) | ((ratio > 1 + epsilon_high) & (a > 0))  # trl's is_region_clipped
        stats = {"clip_ratio": (won.to(mask.dtype) * mask).sum() / tokens, "kl": (kl * mask).sum() / tokens}
    return loss, per_token, stats


def rloo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              epsilon: float, epsilon_high: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """RLOO's loss of one optimizer step, as trl 1.16's ``RLOOTrainer``: one clipped ratio per completion.

    Args:
        logps, old_logps: (B, T) per-token log-probs now (with gradients) and at generation time.
        advantages: (B,) leave-one-out advantages (the KL already in the reward).
        mask: (B, T) 1 on the completion's tokens.
        epsilon, epsilon_high: the sequence ratio is clipped to [1 - epsilon, 1 + epsilon_high].

    Returns:
        ``(loss, per_sequence_loss (B,), stats)`` with detached ``clip_ratio`` (share of completions clipped).
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp((logps * mask).sum(1) - (old_logps * mask).sum(1))  # (B,) sums first, as trl
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    per_seq = -torch.min(ratio * advantages, clipped * advantages)  # (B,)
    with torch.no_grad():
        won = ((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
        stats = {"clip_ratio": won.float().mean(), "kl": torch.zeros(())}
    return per_seq.mean(), per_seq, stats
