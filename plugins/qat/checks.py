"""``hfx validate plugin=qat``: hfx's fake quantization against torch's, and ``convert`` against bitsandbytes.

- The fake-quantized weight of a :class:`FakeQuantLinear` (4 bits, groups of 32, with and without a zero point)
  against ``torch.fake_quantize_per_channel_affine`` given the same scales and zero points, each group taken as
  a channel: equal bit for bit (same rounding, half to even, and the same clamping).
- The straight-through estimator: the input's fake quantization with a static 8-bit range (a min/max observer
  fed one batch, then 1.5 times wider inputs so that values are clamped) and its gradient, against
  ``torch.fake_quantize_per_tensor_affine`` and the gradient torch.ao's ``FakeQuantize`` passes (1 inside the
  range, 0 where clamped); the weight's gradient against a linear layer on torch's fake-quantized weight.
- ``convert`` on a tiny BERT classifier: the packed model's logits against the fake-quantized forward in eval
  mode (the same values, so only float32 summation order may differ).
- QAT at 8 bits per channel, symmetric, converted: the packed codes against bitsandbytes'
  ``int8_vectorwise_quant`` of the trained weight (round(w * 127 / row absmax)); at most one step apart, as for
  ``quant`` (hfx stores the scale in fp16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hfx.validate import Check
from hfx_plugins.qat.fake import FakeQuantLinear, convert
from hfx_plugins.quant import code_range, to_groups, ungroup

__all__ = ["checks"]


def _linear(inp: int = 96, out: int = 40, seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(inp, out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out, inp, generator=g) * 0.1)
        lin.bias.copy_(torch.randn(out, generator=g) * 0.1)
    return lin


@torch.no_grad()
def _weight_vs_torch() -> float:
    diff = 0.0
    for symmetric in (False, True):
        fq = FakeQuantLinear(_linear(), bits=4, group_size=32, symmetric=symmetric)
        scale, zero = fq.weight_qparams()  # (40, 3, 1) each
        groups, _ = to_groups(fq.weight, 32)  # (40, 3, 32)
        qmin, qmax = code_range(4, symmetric)
        ref = torch.fake_quantize_per_channel_affine(groups.reshape(-1, 32), scale.reshape(-1),
                                                     zero.reshape(-1).int(), 0, qmin, qmax)  # (120, 32)
        ref = ungroup(ref.reshape(groups.shape), tuple(fq.weight.shape))  # (40, 96)
        diff = max(diff, (fq.fake_weight() - ref).abs().max().item())
    return diff


def _ste_vs_torch() -> float:
    fq = FakeQuantLinear(_linear(), bits=4, group_size=32, symmetric=False, act_bits=8, act_observer="minmax")
    g = torch.Generator().manual_seed(1)
    fq.train()(torch.randn(8, 96, generator=g))  # the observer's range: this batch's min and max
    fq.eval()
    x = (1.5 * torch.randn(8, 96, generator=g)).requires_grad_(True)  # wider: some values are clamped
    x_ref = x.detach().clone().requires_grad_(True)
    ours = fq(x)
    ours.square().sum().backward()
    scale, zero = fq.observer.qparams(8)  # type: ignore[union-attr]
    xq = torch.fake_quantize_per_tensor_affine(x_ref, float(scale), int(zero), *code_range(8))
    w_ref = fq.weight.detach().clone().requires_grad_(True)  # (40, 96)
    s, z = fq.weight_qparams()  # (40, 3, 1) each
    groups, _ = to_groups(w_ref, 32)  # (40, 3, 32), differentiable
    wq = torch.fake_quantize_per_channel_affine(groups.reshape(-1, 32), s.reshape(-1), z.reshape(-1).int(), 0,
                                                *code_range(4))  # (120, 32)
    ref = F.linear(xq, ungroup(wq.reshape(groups.shape), (40, 96)), fq.bias.detach())
    ref.square().sum().backward()
    clamped = int((x_ref.grad == 0).sum())
    if clamped == 0:
        raise AssertionError("no input value was clamped: the check would not test the STE's zero gradient")
    return max((ours - ref).abs().max().item(), (x.grad - x_ref.grad).abs().max().item(),
               (fq.weight.grad - w_ref.grad).abs().max().item())


@torch.no_grad()
def _convert_vs_fake() -> float:
    import hfx
    from hfx.testing import tiny_model

    model, tok = tiny_model("bert", "sequence-classification", seed=0)
    model = hfx.apply(model, "qat", bits=4, group_size=16).eval()
    enc = tok(["the function returns a new list", "a class may define its own methods"], padding=True,
              return_tensors="pt")
    fake = model(**enc).logits  # (2, num_labels)
    return (convert(model)(**enc).logits - fake).abs().max().item()


@torch.no_grad()
def _int8_codes_vs_bnb() -> float:
    import bitsandbytes.functional as bnbf

    fq = FakeQuantLinear(_linear(768, 256, seed=2), bits=8, group_size=0, symmetric=True)
    w = fq.weight.detach().half()  # (256, 768): bnb quantizes fp16 weights
    fq.weight.copy_(w.float())
    packed = convert(nn.Sequential(fq))[0]
    ref, _, _ = bnbf.int8_vectorwise_quant(w.clone())  # (256, 768) int8
    ours = packed.codes().to(torch.int16) - 128  # codes [1, 255] with Z = 128 -> [-127, 127]
    return (ours - ref.to(torch.int16)).abs().max().item()  # in quantization steps


def checks() -> list[Check]:
    """``hfx validate plugin=qat``: the fake quantizer and its straight-through gradient vs torch's
    ``fake_quantize_per_channel_affine``, the converted layer vs the fake-quantized forward, int8 codes vs
    bitsandbytes.
    """
    return [
        Check("fake-quantized weight int4 g32 vs torch.fake_quantize_per_channel_affine", "torch", 0.0,
              _weight_vs_torch),
        Check("STE: outputs and input/weight gradients vs torch fake_quantize (clamped inputs)", "torch", 1e-5,
              _ste_vs_torch),
        Check("convert: packed logits vs fake-quantized forward (tiny BERT)", "torch", 1e-5, _convert_vs_fake),
        Check("QAT int8 per-channel codes after convert vs int8_vectorwise_quant (steps)", "bitsandbytes", 1.0,
              _int8_codes_vs_bnb),
    ]
