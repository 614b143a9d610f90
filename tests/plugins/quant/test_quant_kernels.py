"""Every fast path of QuantLinear equals the reference dequantize-then-matmul (float32 rounding apart).

The expected output is x @ ((q - Z) s)^T computed by torch from the layer's own codes: the definition of
the stored weight. A kernel that disagrees on the probe must never be chosen.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.quant import kernels, native
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
    monkeypatch.setitem(kernels.KERNELS, "broken", lambda lay, x, with_bias=False: kernels._dequant(lay, x) + 1.0)
    monkeypatch.setattr(kernels, "applicable", lambda lay, m=1: ["dequant", "broken"])
    assert kernels.choose(layer, 1) == "dequant"


def test_the_choice_is_remembered_per_shape_and_machine(tmp_path):
    layer = QuantLinear.from_float(nn.Linear(64, 32), 4, 32, False, clip_steps=0)
    first = kernels.choose(layer, 1)
    assert (tmp_path / "kernels" / "choices.json").is_file()
    kernels._choices = None  # forget the in-memory copy: the file answers
    assert kernels.choose(layer, 1) == first


@pytest.mark.parametrize(("bits", "group_size", "symmetric", "out", "inp"), LAYOUTS)
def test_c_dequantize_equals_the_torch_dequantize_bit_for_bit(bits, group_size, symmetric, out, inp):
    # Expected: QuantLinear.dequantize(), (q - Z) * s by torch; the C kernel does the same two float operations.
    if kernels.fused_library() is None:
        pytest.skip("no C compiler")
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(inp, out), bits, group_size, symmetric, clip_steps=0)
    w = layer.dequantize()  # (out, in)
    for threads in (1, 2):
        assert torch.equal(native.dequantize(layer, threads), w)
        assert torch.equal(native.dequantize(layer, threads, rows=(3, 9)), w[3:9])


@pytest.mark.parametrize("m", [1, 5, 600])
def test_every_kernel_adds_the_bias_as_f_linear_does(m):
    # Expected: torch.nn.functional.linear(x, dequantize(), bias), the layer's training path.
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(64, 32), 4, 32, False, clip_steps=0)
    x = torch.randn(m, 64)
    reference = torch.nn.functional.linear(x, layer.dequantize(), layer.bias)  # (m, 32)
    for name in kernels.applicable(layer, m):
        torch.testing.assert_close(kernels.KERNELS[name](layer, x, True), reference, rtol=1e-5, atol=1e-4, msg=name)


def test_long_prompts_take_the_c_dequantization_only_when_it_is_exact(monkeypatch, caplog):
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(64, 32), 8, 0, False, clip_steps=0)
    if kernels.fused_library() is None:
        assert kernels.choose(layer, 512) == "dequant"
        return
    prefill = kernels.applicable(layer, 512)  # the GEMV kernels are never measured there
    assert prefill == (["dequant", "cdequant", "cdequant_1t"] if torch.get_num_threads() > 1 else ["dequant", "cdequant"])
    assert kernels.choose(layer, 512) in ("cdequant", "cdequant_1t")
    exact = native.dequantize
    monkeypatch.setattr(native, "dequantize", lambda lay, threads, rows=None, out=None: exact(lay, threads) * 1.001)
    assert kernels.choose(layer, 512) == "dequant"
    assert "cdequant" in caplog.text


def test_prepare_kernels_takes_the_choice_out_of_the_forward(monkeypatch):
    torch.manual_seed(0)
    dense = nn.Linear(96, 48)
    model = nn.Sequential(QuantLinear.from_float(dense, 8, 0, False, clip_steps=0), nn.ReLU(),
                          QuantLinear.from_float(nn.Linear(48, 16), 4, 16, False, clip_steps=0), nn.Linear(16, 4))
    report = kernels.prepare_kernels(model, tokens=(1, 100))
    assert sorted(report) == ["0", "2"] and all(sorted(r) == ["1", ">64"] for r in report.values())

    def refuse(*args, **kwargs):
        raise AssertionError("the forward measured a kernel after prepare_kernels")

    monkeypatch.setattr(kernels, "choose", refuse)
    for m in (1, 100):
        x = torch.randn(m, 96)
        with torch.no_grad():
            fast = model(x)
        reference = model[3](torch.relu(x @ model[0].dequantize().t() + model[0].bias) @ model[2].dequantize().t()
                             + model[2].bias)  # the definition, layer by layer
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-4)


def test_the_native_layer_follows_codes_loaded_later():
    # A kernel keeps pointers to the layer's tensors: new codes (load_state_dict) must be the ones used.
    torch.manual_seed(0)
    a = QuantLinear.from_float(nn.Linear(64, 32), 8, 0, False, clip_steps=0)
    b = QuantLinear.from_float(nn.Linear(64, 32), 8, 0, False, clip_steps=0)
    x = torch.randn(1, 64)
    names = [n for n in kernels.applicable(a) if n != "dequant"]
    for name in names:
        kernels.KERNELS[name](a, x, True)  # builds a's converted state
    a.load_state_dict(b.state_dict())
    reference = torch.nn.functional.linear(x, b.dequantize(), b.bias)
    for name in names:
        torch.testing.assert_close(kernels.KERNELS[name](a, x, True), reference, rtol=1e-5, atol=1e-4, msg=name)


def test_compilation_falls_back_to_fewer_flags_then_to_torch(monkeypatch, caplog):
    if native.library() is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_lib_tried", False)
    monkeypatch.setattr(native, "_FLAG_SETS", (["-O3", "-fno-such-flag-hfx"], ["-O1"]))  # first set fails
    assert native.library() is not None
    assert "-O1" in caplog.text
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(64, 32), 4, 32, False, clip_steps=0)
    x = torch.randn(3, 64)
    torch.testing.assert_close(kernels.KERNELS["fused"](layer, x), x @ layer.dequantize().t(), rtol=1e-5, atol=1e-4)
    # No compiler at all: one warning, only torch's paths, same outputs.
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_lib_tried", False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    fresh = QuantLinear.from_float(nn.Linear(64, 32), 4, 32, False, clip_steps=0)
    assert "cdequant" not in kernels.applicable(fresh) and "fused" not in kernels.applicable(fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), torch.nn.functional.linear(x, fresh.dequantize(), fresh.bias))
    assert "no C compiler" in caplog.text


def test_the_c_kernels_refuse_what_they_cannot_read():
    # A 3-bit layer or a wrongly shaped input would be read out of bounds by C: refused with HfxError instead.
    if kernels.fused_library() is None:
        pytest.skip("no C compiler")
    three = QuantLinear.from_float(nn.Linear(64, 32), 3, 32, False, clip_steps=0)
    assert "fused" not in kernels.applicable(three)
    with pytest.raises(HfxError, match="8-bit codes"):
        native.gemv(three, torch.randn(1, 64), 1)
    layer = QuantLinear.from_float(nn.Linear(64, 32), 8, 0, False, clip_steps=0)
    with pytest.raises(HfxError, match="float32"):
        native.gemv(layer, torch.randn(1, 63), 1)
    with pytest.raises(HfxError, match="out must be"):
        native.dequantize(layer, 1, out=torch.empty(32, 63))
