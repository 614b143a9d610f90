"""QLoRA: LoRA adapters trained on a frozen quantized base (``plugin=[quant,lora]``), and merging them back.

Composition needs nothing special: :class:`QuantLinear` is an ``nn.Linear`` subclass, so the ``lora`` plugin
wraps it like any linear layer, y = QuantLinear(x) + s B A x, and only A and B train (the base holds integer
buffers, nothing with a gradient). Dettmers et al., "QLoRA", https://arxiv.org/abs/2305.14314.

Merging is where quantized bases go wrong elsewhere (peft warns "may get different generations due to rounding
errors"; users ask for merges that do not hide this). :func:`merge_lora` does the only thing possible,
W' = Q(deq(W) + s B A), requantized with the base layer's own bits and grouping, and returns, per layer, how
large the rounding error it adds is compared with the update it merges, so the cost is a number, not a warning.
"""

from __future__ import annotations

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.quant.apply import set_module
from hfx_plugins.quant.layer import QuantLinear

__all__ = ["merge_lora", "requantize_with_update"]


class _Dense(nn.Module):
    """A stand-in with ``weight`` (out, in) and ``bias``, the interface :meth:`QuantLinear.from_float` reads."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), None if bias is None else nn.Parameter(bias)


@torch.no_grad()
def requantize_with_update(base: QuantLinear, delta: torch.Tensor, clip_steps: int = 20,
                           name: str = "") -> tuple[QuantLinear, dict[str, float | str]]:
    """W' = Q(deq(W) + delta) with ``base``'s bits, grouping and symmetry; delta (out, in). Returns W' and its report.

    Report: ``update_norm`` ||delta||, ``merge_error`` ||deq(W') - (deq(W) + delta)|| (Frobenius norms),
    ``max_error`` max |deq(W') - (deq(W) + delta)| and ``error_vs_update`` = merge_error / update_norm.
    The new ranges come from the clip search (``clip_steps``; data-free, also for a GPTQ-quantized base).
    """
    w = base.dequantize()  # (out, in)
    merged = w + delta.to(w)
    new = QuantLinear.from_float(_Dense(merged, base.bias), base.bits, base.group_size, base.symmetric,
                                 clip_steps, base.act_mode, name=name)
    diff = new.dequantize() - merged  # (out, in)
    err, upd = diff.norm().item(), delta.float().norm().item()
    row: dict[str, float | str] = {"layer": name, "update_norm": upd, "merge_error": err,
                                   "max_error": diff.abs().max().item(),
                                   "error_vs_update": err / upd if upd > 0 else float("inf") if err > 0 else 0.0}
    return new, row


@torch.no_grad()
def merge_lora(model: nn.Module) -> tuple[nn.Module, list[dict[str, float | str]]]:
    """Merge the active LoRA adapters of every LoRA layer whose base is a :class:`QuantLinear`, in place.

    Returns the model (those LoRA wrappers replaced by their new, requantized QuantLinear base) and one report
    row per layer. The merge itself is ``LoraLayer.merge`` (:func:`requantize_with_update` with the base's
    layout and the clip search; DoRA refused); this only unwraps the merged layers.
    """
    rows: list[dict[str, float | str]] = []
    wrappers = [(n, m) for n, m in model.named_modules() if isinstance(getattr(m, "base_layer", None), QuantLinear)]
    if not wrappers:
        raise HfxError("no LoRA layer on a quantized base found; apply plugin=[quant,lora] first")
    for name, layer in wrappers:
        pending = [a for a in layer.active_adapters if a not in layer.merged_adapters]  # merged ones are inside
        rows += layer.merge(pending)
        set_module(model, name, layer.base_layer)
    return model, rows
