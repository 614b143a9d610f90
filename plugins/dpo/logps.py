"""Completion log-probabilities of the policy and of its reference, and the DPO loss of one batch of pairs."""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hfx.errors import HfxError
from hfx.protocols import config_of
from hfx_plugins.dpo.losses import dpo_loss
from hfx_plugins.prompt_learning import check_reference

__all__ = ["completion_logps", "disable_dropout", "dpo_batch_loss", "reference", "require_adapter"]


def completion_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(2P,) sum of the log-probs of each row's completion tokens (``completion_mask``), as trl 1.16 sums them.

    Position t's logits predict token t+1, so the per-token log-probs are masked by ``completion_mask[:, 1:]``:
    prompt and pad tokens add nothing (trl's labels are -100 there). Log-softmax is taken in float32 (trl's fused
    LM head computes in float32 too). The LM head runs only from the position before the batch's first
    completion token on (``logits_to_keep``, where the model takes it): the same values, without the (B, T, V)
    logits of the prompt (V = 49,152 for smollm2, whose prompts are ~45 of ~75 tokens).
    """
    completion = batch["completion_mask"]  # (B, T)
    present = completion.any(0).nonzero()
    start = max(int(present[0]) - 1, 0) if len(present) else completion.size(1) - 1  # predicts the first one
    extra = {"logits_to_keep": completion.size(1) - start} if _takes_logits_to_keep(model) else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                   **extra).logits
    logits = logits[:, -(completion.size(1) - start):-1].float()  # (B, T-1-start, V): position t predicts t+1
    labels = batch["input_ids"][:, start + 1:]  # (B, T-1-start)
    per_token = torch.gather(F.log_softmax(logits, dim=-1), 2, labels.unsqueeze(-1)).squeeze(-1)
    return (per_token * completion[:, start + 1:]).sum(1)  # (B,)


def _takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model.forward`` accepts transformers' ``logits_to_keep`` (most causal LMs of transformers 5)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def require_adapter(model: nn.Module) -> None:
    """Raise a one-line HfxError when ``model`` has no LoRA adapter for its reference to disable, or a trained
    prompt_tuning / prefix_tuning module that disabling the adapter would leave in the reference."""
    check_reference(model, "dpo")
    if config_of(getattr(model, "module", model), "lora") is None:
        raise HfxError(f"DPO's reference is the policy with its LoRA adapter disabled, and this {type(model).__name__} "
                       "has none: apply one first (hfx.apply(model, 'lora', ...)) or pass ref_model=<a frozen copy>")


def reference(model: nn.Module, ref_model: nn.Module | None) -> tuple[nn.Module, AbstractContextManager[Any]]:
    """The reference and the context to run it in: ``ref_model`` as it is, else the policy, its adapter disabled."""
    if ref_model is not None:
        return ref_model, nullcontext()
    from hfx_plugins.lora import disable_adapters

    require_adapter(model)
    return model, disable_adapters(getattr(model, "module", model))


def disable_dropout(model: nn.Module) -> None:
    """Set every ``nn.Dropout``'s probability to 0 (trl's ``disable_dropout_in_model``)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def dpo_batch_loss(model: nn.Module, batch: dict[str, torch.Tensor], beta: float, loss_type: str,
                   ref_model: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean DPO loss of a batch from :func:`~hfx_plugins.dpo.data.collate_pairs`, and its per-pair parts.

    The policy's forward keeps the graph; the reference's (``ref_model``, or the policy with its adapter
    disabled: one model in memory) runs without it, after the policy's, as in trl 1.16's ``_compute_loss``.

    Returns:
        ``(loss, parts)``: the scalar mean of the per-pair losses, and ``parts`` with (P,) tensors ``losses``,
        ``chosen_rewards``, ``rejected_rewards`` (beta times the log-ratios), ``chosen_logps``, ``rejected_logps``.

    Raises:
        HfxError: no ``ref_model`` and no LoRA adapter on ``model``; what :func:`dpo_loss` raises.
    """
    ref, ctx = reference(model, ref_model)
    logps = completion_logps(model, batch)  # (2P,): chosen rows, then rejected rows
    with torch.no_grad(), ctx:
        ref_logps = completion_logps(ref, batch)  # (2P,)
    lengths = batch["completion_mask"].sum(1).float()  # (2P,) trl's count for ipo: the unshifted completion_mask
    chosen, rejected = logps.chunk(2)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    n_chosen, n_rejected = lengths.chunk(2)
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, loss_type,
                                                        chosen_lengths=n_chosen, rejected_lengths=n_rejected)
    return losses.mean(), {"losses": losses.detach(), "chosen_rewards": chosen_rewards,
                           "rejected_rewards": rejected_rewards, "chosen_logps": chosen.detach(),
                           "rejected_logps": rejected.detach()}
