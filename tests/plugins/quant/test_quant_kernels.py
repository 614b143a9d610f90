"""Every fast path of QuantLinear equals the reference dequantize-then-matmul (float32 rounding apart).

The expected output is x @ ((q - Z) s)^T computed by torch from the layer's own codes: the definition of
the stored weight. A kernel that disagrees on the probe must never be chosen.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hfx_plugins.quant import kernels
from hfx_plugins.quant.layer import QuantLinear


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFX_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_choices", None)


LAYOUTS = [  # (bits, group_size, symmetric, out, in): per channel, groups, a short last group, per tensor
    (8, 0, False, 48, 96), (8, 0, True, 32, 80), (8, 32, False, 40, 72), (8, -1, False, 16, 64),
    (4, 32, False, 48, 96), (4, 64, True, 32, 128), (4, 32, False, 24, 80), (4, 0, False, 16, 48),
]


@pytest.mark.parametrize(("bits", "group_size", "symmetric", "out", "inp"), LAYOUTS)
@pytest.mark.parametrize("m", [1, 3, 70])
def test_every_applicable_kernel_equals_the_dequantized_matmul(bits, group_size, symmetric, out, inp, m):
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(inp, out), bits, group_size, symmetric, clip_steps=0)
    x = torch.randn(m, inp)
    reference = x @ layer.dequantize().t()  # (m, out)
    names = kernels.applicable(layer)
    assert names[0] == "dequant"
    if kernels.fused_library() is not None:
        assert "fused" in names  # 8 and 4 bits with an even row length always have the fused path
    for name in names:
        got = kernels.KERNELS[name](layer, x)
        assert got.shape == (m, out)
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-4, msg=name)


def test_forward_at_inference_uses_a_kernel_and_matches_training_path():
    torch.manual_seed(0)
    dense = nn.Linear(64, 32)
    layer = QuantLinear.from_float(dense, 4, 32, False, clip_steps=0)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        fast = layer(x)  # (2, 5, 32) through the chosen kernel
    slow = torch.nn.functional.linear(x, layer.dequantize(), layer.bias)  # the definition
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)
    x.requires_grad_(True)
    layer(x).sum().backward()  # training goes through dequantize: a gradient reaches the input
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_kernel_that_disagrees_is_never_chosen(monkeypatch):
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(64, 32), 8, 0, False, clip_steps=0)
    monkeypatch.setitem(kernels.KERNELS, "broken", lambda lay, x: kernels._dequant(lay, x) + 1.0)
    monkeypatch.setattr(kernels, "applicable", lambda lay: ["dequant", "broken"])
    assert kernels.choose(layer, 1) == "dequant"


def test_the_choice_is_remembered_per_shape_and_machine(tmp_path):
    layer = QuantLinear.from_float(nn.Linear(64, 32), 4, 32, False, clip_steps=0)
    first = kernels.choose(layer, 1)
    assert (tmp_path / "kernels" / "choices.json").is_file()
    kernels._choices = None  # forget the in-memory copy: the file answers
    assert kernels.choose(layer, 1) == first
