"""The DPO family of losses on sequence log-probabilities, as trl 1.16's ``DPOTrainer._compute_loss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hfx.errors import HfxError
from hfx_plugins.dpo.config import check_beta_and_loss

__all__ = ["dpo_loss"]


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float = 0.1, loss_type: str = "sigmoid", *,
             chosen_lengths: torch.Tensor | None = None, rejected_lengths: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the implied rewards, from summed completion log-probs.

    With the log-ratios ``c = chosen_logps - ref_chosen_logps`` and ``r = rejected_logps - ref_rejected_logps``
    and ``h = c - r``, as trl 1.16 (``trl/trainer/dpo_trainer.py``, ``DPOTrainer._compute_loss``, branch per
    ``loss_type``, with ``f_divergence_type="reverse_kl"``):

    - ``sigmoid``: ``-logsigmoid(beta * h)`` (Rafailov et al. 2023, eq. 7);
    - ``hinge``: ``relu(1 - beta * h)`` (SLiC-HF, Zhao et al. 2023);
    - ``ipo``: ``(c / n_c - r / n_r - 1 / (2 * beta)) ** 2`` (Azar et al. 2023, eq. 17), each log-ratio divided
      by its completion's token count, as trl does (the IPO authors' normalisation; the paper's eq. uses sums).

    Args:
        chosen_logps: (P,) sum of the policy's log-probs over each chosen completion's tokens.
        rejected_logps: (P,) the same for the rejected completions.
        ref_chosen_logps: (P,) the reference model's sums for the chosen completions.
        ref_rejected_logps: (P,) the reference's sums for the rejected completions.
        beta: The inverse temperature (tau for ipo); > 0.
        loss_type: ``"sigmoid"``, ``"hinge"`` or ``"ipo"``.
        chosen_lengths: (P,) completion token counts of the chosen completions; required by ``ipo``.
        rejected_lengths: (P,) the same for the rejected completions.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each (P,): the per-pair losses (trl's loss is their mean)
        and ``beta * c``, ``beta * r`` detached (trl's ``rewards/chosen`` and ``rewards/rejected``, unnormalised
        for every loss type).

    Raises:
        HfxError: ``beta <= 0``, an unknown ``loss_type``, ``ipo`` without lengths, or shapes that differ.
    """
    check_beta_and_loss(beta, loss_type)
    shape = chosen_logps.shape
    if chosen_logps.dim() != 1 or any(t.shape != shape for t in (rejected_logps, ref_chosen_logps, ref_rejected_logps)):
        raise HfxError("dpo_loss takes four (P,) tensors of summed log-probs, one entry per pair; got shapes "
                       f"{[tuple(t.shape) for t in (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)]}")
    chosen_logratios = chosen_logps - ref_chosen_logps  # (P,)
    rejected_logratios = rejected_logps - ref_rejected_logps  # (P,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen_logratios - rejected_logratios))
    else:
        if chosen_lengths is None or rejected_lengths is None:
            raise HfxError("dpo_loss(loss_type='ipo') averages each log-ratio over its completion's tokens (as trl): "
                           "pass chosen_lengths= and rejected_lengths= (P,) token counts")
        # trl clamps the count at 1, so an empty completion divides by 1 instead of 0.
        h = chosen_logratios / chosen_lengths.clamp(min=1.0) - rejected_logratios / rejected_lengths.clamp(min=1.0)
        losses = (h - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
