"""Group-relative advantages: GRPO's normalised group baseline and RLOO's leave-one-out baseline.

Rewards come flat, ``(prompts * G,)``, each prompt's G completions next to each other (trl's order: its sampler
repeats every prompt G times in a row), so ``rewards.view(-1, G)`` is one group per row.

- GRPO (Shao et al. 2024, https://arxiv.org/abs/2402.03300, eq. 3; trl 1.16 ``GRPOTrainer.
  _generate_and_score_completions``): ``A = (r - mean_group) / (std + 1e-4)``, the std with Bessel's
  correction (trl's ``nanstd``) taken per group (``scale_rewards="group"``), over the whole batch ("batch",
  Liu et al. 2025's remedy for the per-group bias), or not divided at all ("none": Dr. GRPO).
- RLOO (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740; trl 1.16 ``RLOOTrainer``): ``A = r - (sum_group
  - r) / (G - 1)``, the mean of the other G - 1 rewards; with ``normalize_advantages`` whitened over the batch,
  ``(A - mean) / (std + 1e-4)``.

Departure from trl: a group whose rewards are all equal gets exactly 0. In trl ``r - mean`` is then a rounding
residue (a float mean of equal values need not equal them; e.g. three float32 0.1s), which the division by
``std + 1e-4 = 1e-4`` multiplies by 10^4; here such groups carry no signal, as the formula intends.
"""

from __future__ import annotations

import torch

from hfx.errors import HfxError
from hfx_plugins.grpo.config import ESTIMATORS, SCALE_REWARDS, check_groups

__all__ = ["group_advantages"]


def group_advantages(rewards: torch.Tensor, num_generations: int, estimator: str = "grpo",
                     scale_rewards: str = "group", normalize_advantages: bool = False) -> torch.Tensor:
    """Advantages (N,) of flat rewards (N,) = (prompts * num_generations,) in trl's order.

    Args:
        rewards: (N,) one reward per completion, the G completions of a prompt consecutive.
        num_generations: G, completions per prompt (>= 2).
        estimator: "grpo" (group-normalised) or "rloo" (leave-one-out).
        scale_rewards: grpo only: "group", "batch" or "none" (what r - mean is divided by).
        normalize_advantages: rloo only: whiten over the batch (trl RLOOConfig's ``normalize_advantages``).

    Returns:
        (N,) float advantages; 0 for every completion of a group whose rewards are all equal.

    Raises:
        HfxError: G < 2, N not a multiple of G, or an unknown estimator / scale_rewards.
    """
    if estimator not in ESTIMATORS or scale_rewards not in SCALE_REWARDS:
        raise HfxError(f"group_advantages: estimator must be one of {ESTIMATORS} and scale_rewards one of "
                       f"{SCALE_REWARDS}, got {estimator!r} and {scale_rewards!r}")
    check_groups(rewards.numel(), num_generations)
    grouped = rewards.float().reshape(-1, num_generations)  # (prompts, G)
    flat = (grouped.amax(1, keepdim=True) == grouped.amin(1, keepdim=True)).expand_as(grouped).reshape(-1)  # (N,)
    if estimator == "rloo":
        others = (grouped.sum(1, keepdim=True) - grouped) / (num_generations - 1)  # (prompts, G) baseline
        adv = (grouped - others).reshape(-1)  # (N,)
        adv = adv.masked_fill(flat, 0.0)
        if normalize_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-4)  # torch's std is Bessel-corrected, as trl's nanstd
        return adv
    mean = grouped.mean(1, keepdim=True)  # (prompts, 1)
    adv = (grouped - mean).reshape(-1)  # (N,)
    if scale_rewards == "group":
        adv = adv / (grouped.std(1, keepdim=True).expand_as(grouped).reshape(-1) + 1e-4)
    elif scale_rewards == "batch":
        adv = adv / (grouped.std() + 1e-4)  # one std over all N rewards
    return adv.masked_fill(flat, 0.0)
