"""QuantLinear, hfx.apply(model, "quant"), hfx.save / hfx.load on tiny random models of each family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.quant import load_quantized
from hfx_plugins.quant.apply import storage_summary
from hfx_plugins.quant.layer import QuantLinear, dynamic_int8

TEXTS = ["the function returns a new list", "a class may define its own methods"]


def _inputs(tok) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids", None)
    return enc


def _out(model, enc) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model.eval()(**enc)[0]


def test_storage_bits_by_hand() -> None:
    # smollm2's q_proj shape (576 inputs), int4 g128: 5 groups per row (4 x 128 + 64), each an fp16 scale and a
    # uint8 zero: 4 + 5 * (16 + 8) / 576 = 4.2083 bits per weight.
    layer = QuantLinear(576, 8, bits=4, group_size=128)
    assert layer.scales.shape == (8, 5)
    assert layer.storage_bits() / (576 * 8) == pytest.approx(4 + 5 * 24 / 576)


def test_forward_is_linear_with_dequantized_weight_and_conv1d() -> None:
    lin = torch.nn.Linear(40, 12)
    q = QuantLinear.from_float(lin, 4, 16, False)
    x = torch.randn(3, 40)
    # Inference may take a fused kernel (plugins/quant/kernels.py) that sums in another order: equal to the
    # dequantized matmul up to float32 rounding; with a gradient, the dequantized matmul itself, exactly.
    torch.testing.assert_close(q(x), F.linear(x, q.dequantize(), q.bias), rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    assert torch.equal(q(xg), F.linear(xg, q.dequantize(), q.bias))
    conv = Conv1D(12, 40)  # GPT-2 layout: weight (in=40, out=12), y = x W + b
    conv.weight.data.normal_()
    qc = QuantLinear.from_float(conv, 8, 0, True)
    assert (qc.dequantize() - conv.weight.t()).abs().max() <= conv.weight.abs().max() / 127  # within one step
    assert (qc(x) - conv(x)).abs().max() < 0.05 * conv(x).abs().max()


@pytest.mark.parametrize("symmetric", [True, False])
def test_integer_matmul_equals_simulated_int8(symmetric: bool) -> None:
    lin = torch.nn.Linear(64, 24)
    q = QuantLinear.from_float(lin, 8, 0, symmetric, act_mode="dynamic")
    x = torch.randn(5, 64)
    xq, sx = dynamic_int8(x)
    simulated = F.linear(xq * sx, q.dequantize(), q.bias)  # the same numbers computed in fp32
    assert (q(x) - simulated).abs().max() < 1e-5 * simulated.abs().max() * 10


@pytest.mark.parametrize("family,bits,group", [("llama", 4, 24), ("gpt2", 3, 16), ("bert", 8, 0), ("t5", 2, -1)])
def test_save_load_identical_outputs(tmp_path: Path, family: str, bits: int, group: int) -> None:
    task = {"bert": "base", "t5": "seq2seq-lm"}.get(family, "causal-lm")
    model, tok = tiny_model(family, task, seed=0)
    enc = _inputs(tok)
    if family == "t5":
        enc["decoder_input_ids"] = enc["input_ids"][:, :3]
    ref = _out(model, enc)
    model = hfx.apply(model, "quant", bits=bits, group_size=group, activations="dynamic" if bits == 8 else "none")
    out = _out(model, enc)
    assert 0 < (out - ref).abs().max() < (0.05 if bits == 8 else 1.0) * ref.abs().max()
    hfx.save(model, tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["config.json", "hfx_quant.json", "model.safetensors"]
    fresh, _ = tiny_model(family, task, seed=1)  # different weights: everything must come from the folder
    loaded = hfx.load(fresh, tmp_path / "q")
    assert torch.equal(_out(loaded, enc), out)


def test_meta_device_load_and_smaller_file(tmp_path: Path) -> None:
    model, tok = tiny_model("llama", "causal-lm", seed=0)
    model.save_pretrained(tmp_path / "fp32")
    model = hfx.apply(model, "quant", bits=4, group_size=16)
    hfx.save(model, tmp_path / "q4")
    loaded = load_quantized(tmp_path / "q4")  # built on the meta device: no fp32 copy of the weights
    enc = _inputs(tok)
    assert torch.equal(_out(loaded, enc), _out(model, enc))
    assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])
    s = storage_summary(model)
    assert s["bits_per_param"] == pytest.approx(4 + 2 * 24 / 32)  # hidden 32 and MLP 64 inputs, g16: 24 bits / 16 weights
    assert (tmp_path / "q4/model.safetensors").stat().st_size < (tmp_path / "fp32/model.safetensors").stat().st_size


def test_bad_input_errors() -> None:
    model, _ = tiny_model("llama", "causal-lm", seed=0)
    with pytest.raises(HfxError, match="quant.bits=5 is not supported"):
        hfx.apply(model, "quant", bits=5)
    with pytest.raises(HfxError, match="group_size=-3 is invalid"):
        hfx.apply(model, "quant", group_size=-3)
    with pytest.raises(HfxError, match="matches no linear layer"):
        hfx.apply(model, "quant", target_modules=["nonexistent"])
    model.model.layers[1].mlp.up_proj.weight.data[0, 0] = float("nan")
    with pytest.raises(HfxError, match=r"layer model\.layers\.1\.mlp\.up_proj: weight has 1 NaN/inf"):
        hfx.apply(model, "quant", bits=4, group_size=16)
    model, _ = tiny_model("llama", "causal-lm", seed=0)
    model = hfx.apply(model, "quant", bits=8, group_size=0)
    with pytest.raises(HfxError, match="already quantized"):
        hfx.apply(model, "quant", bits=4)


def test_bitsandbytes_model_counts_as_quantized() -> None:
    from hfx_plugins.quant.measure import bnb_quantize

    model, _ = tiny_model("bert", "base", seed=0)
    model = bnb_quantize(model, "int8")
    with pytest.raises(HfxError, match="already quantized.*Linear8bitLt"):
        hfx.apply(model, "quant", bits=4)
