"""Fake quantization with a straight-through estimator, and ``convert`` to packed :class:`QuantLinear` layers.

In the forward pass the weight (and optionally the input) is quantized and immediately dequantized, so the
network computes with exactly the values the packed model will hold, while the master weights stay fp32
and receive fp32 gradients. round() has zero gradient almost everywhere, so the backward pass uses the
straight-through estimator (Bengio et al. 2013, https://arxiv.org/abs/1308.3432): d fq(x) / dx = 1 where x
fell inside the quantization range and 0 where it was clamped (as torch.ao's FakeQuantize). With min/max weight
ranges almost nothing is clamped: only a group's extreme value whose code lands one past the end because the
scale was rounded to fp16 (measured: 4 and 57 of 76,800 weights at 4 and 8 bits asymmetric, none symmetric).

The weight's scales and zero points come from the current weights by min/max (absmax when symmetric) at
every step, torchao's "dynamic" weight fake quantization; the range search of PTQ is too slow to run at
every step. :func:`convert` computes the same scales once more from the trained weights, so the packed
model computes the very same numbers as the fake-quantized forward in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hfx.protocols import effective_weight
from hfx_plugins.quant import (
    Observer,
    QuantLinear,
    choose_qparams,
    code_range,
    dynamic_int8,
    fake_quantize_mask,
    group_ranges,
    make_observer,
    to_groups,
    ungroup,
)

__all__ = ["FakeQuantLinear", "convert", "fake_quant_ste"]


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: float, qmax: float) -> torch.Tensor:  # type: ignore[override]
        y, inside = fake_quantize_mask(x, scale, zero, qmin, qmax)  # quant's affine formula, as torch rounds
        ctx.save_for_backward(inside)  # inside the range: gradient passes
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quant_ste(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: float, qmax: float) -> torch.Tensor:
    """(clamp(round(x / s) + Z, qmin, qmax) - Z) * s with the straight-through gradient; s, Z broadcast to x.

    ``x`` has any shape; the result has ``x``'s shape.

    The forward is ``hfx_plugins.quant.fake_quantize`` (torch's ``fake_quantize_per_channel_affine`` bit for bit);
    the backward passes the gradient where the code fell inside [qmin, qmax], as torch.ao's ``FakeQuantize``.
    """
    return _FakeQuantSTE.apply(x, scale, zero, qmin, qmax)


class FakeQuantLinear(nn.Module):
    """A linear layer whose forward uses fake-quantized weights (and inputs); weight (out, in) stays fp32."""

    def __init__(self, module: nn.Module, bits: int, group_size: int, symmetric: bool, act_bits: int = 0,
                 act_observer: str = "dynamic") -> None:
        super().__init__()
        w = effective_weight(module).detach()  # (out, in); Conv1D's (in, out) is transposed once here
        self.out_features, self.in_features = w.shape
        self.weight = nn.Parameter(w.clone().contiguous(), requires_grad=module.weight.requires_grad)
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach().clone())
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric
        self.act_bits, self.act_observer = act_bits, act_observer
        self.observer: Observer | None = make_observer(act_observer) if act_bits and act_observer != "dynamic" else None

    @torch.no_grad()
    def weight_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero), each (rows, G, 1), from the current weights' group min/max."""
        groups, _ = to_groups(self.weight.detach().float(), self.group_size)
        lo, hi = group_ranges(groups)
        return choose_qparams(lo, hi, self.bits, self.symmetric)

    def fake_weight(self) -> torch.Tensor:
        """The weight as the packed model will hold it, (out, in), differentiable by STE."""
        scale, zero = self.weight_qparams()
        groups, _ = to_groups(self.weight, self.group_size)  # (rows, G, g); padding repeats a real value
        fq = fake_quant_ste(groups, scale, zero, *code_range(self.bits, self.symmetric))  # (rows, G, g)
        return ungroup(fq, (self.out_features, self.in_features))

    def fake_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., in) fake-quantized to 8 bits as the converted layer will see it, or unchanged when
        ``act_bits=0``.

        Dynamic (no observer): per-token absmax int8, as ``QuantLinear(act_mode="dynamic")``; static: the
        observer's range (updated in training mode, frozen in eval mode), asymmetric 8-bit codes. Gradients
        pass straight through inside the range (torch.ao's ``FakeQuantize``).
        """
        if not self.act_bits:
            return x
        if self.observer is None:  # dynamic per-token int8, as QuantLinear(act_mode="dynamic")
            with torch.no_grad():
                _, sx = dynamic_int8(x)  # (..., 1)
            return fake_quant_ste(x, sx, torch.zeros_like(sx), -127, 127)
        if self.training:
            self.observer(x)  # the range follows training data; frozen in eval mode
        scale, zero = self.observer.qparams(8, symmetric=False)
        return fake_quant_ste(x, scale, zero, *code_range(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out): ``F.linear`` of fake-quantized input and weight (STE gradients)."""
        return F.linear(self.fake_input(x), self.fake_weight(), self.bias)

    def extra_repr(self) -> str:
        """Sizes, bits, group size and activation bits, shown by ``print(model)``."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, act_bits={self.act_bits}")


@torch.no_grad()
def convert(model: nn.Module) -> nn.Module:
    """Replace every :class:`FakeQuantLinear` by the packed :class:`QuantLinear` computing the same outputs."""
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)]:
        scale, zero = m.weight_qparams()
        act_mode = "none" if not m.act_bits else ("dynamic" if m.observer is None else "static")
        q = QuantLinear.from_qparams(m, m.bits, m.group_size, m.symmetric, scale, zero, act_mode)
        if act_mode == "static":
            q.act_scale, q.act_zero = m.observer.qparams(8, symmetric=False)  # type: ignore[union-attr]
        model.set_submodule(name, q)
    return model.eval()
