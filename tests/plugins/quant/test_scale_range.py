"""Scales outside fp16's range: tiny, zero, constant and huge groups at every bit width, RTN and GPTQ.

Independent sources: bitsandbytes' int8 absmax rows (``int8_vectorwise_quant``, fp32 statistics) for the
error of 8-bit per-channel symmetric quantization, and the uniform-grid bound |w - q(w)| <= s / 2 for the rest.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.quant.gptq import gptq_quantize
from hfx_plugins.quant.layer import QuantLinear


def _rel(a: torch.Tensor, w: torch.Tensor) -> float:
    return float((a - w).norm() / w.norm())


@pytest.mark.parametrize("std", [1e-3, 1e-5])
def test_tiny_weights_as_good_as_bitsandbytes_int8(std: float) -> None:
    import bitsandbytes.functional as bnbf

    torch.manual_seed(0)
    lin = nn.Linear(256, 16)
    lin.weight.data.normal_(0, std)
    w = lin.weight.data.clone()
    cb, scb, _ = bnbf.int8_vectorwise_quant(w)
    bnb_err = _rel(bnbf.int8_vectorwise_dequant(cb, scb), w)  # 0.0074 at both scales
    with pytest.warns(UserWarning, match="keep fp32 scales"):
        q = hfx.apply(nn.Sequential(lin), "quant", bits=8, group_size=0, sym=True, clip_steps=0, target_modules=["0"])[0]
    assert _rel(q.dequantize(), w) <= 1.05 * bnb_err  # was 0.018 (1e-3) and 0.99 (1e-5) with clamped fp16 scales
    assert q.scales.dtype == torch.float32
    assert q.storage_bits() == 256 * 16 * 8 + 16 * 32  # codes + one fp32 scale per row


def test_normal_weights_keep_fp16_scales() -> None:
    torch.manual_seed(0)
    q = QuantLinear.from_float(nn.Linear(64, 8), 4, 32, False, clip_steps=0)
    assert q.scales.dtype == torch.float16 and q.storage_bits() == 64 * 8 * 4 + 16 * 16 + 16 * 8


def _hard_rows() -> torch.Tensor:
    torch.manual_seed(1)
    rows = [torch.zeros(64), torch.full((64,), 0.37), torch.full((64,), -2.0), torch.randn(64) * 1e-6,
            torch.randn(64) * 1e7, torch.randn(64)]
    return torch.stack(rows)  # (6, 64): zero, constant, negative constant, tiny, huge, normal


@pytest.mark.parametrize("method", ["rtn", "gptq"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
def test_each_group_within_half_a_step(method: str, bits: int, sym: bool) -> None:
    w = _hard_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "rtn":
            q = QuantLinear._from_matrix(w, None, bits, 0, sym, 0, "none")
        else:
            x = torch.randn(256, 64, generator=torch.Generator().manual_seed(2))
            codes, scale, zero = gptq_quantize(w, x.T @ x, bits, 0, sym, clip_steps=0)
            q = QuantLinear.from_codes(codes, scale, zero, bits, 0, sym)
    deq = q.dequantize()  # (6, 64)
    assert bool(deq.isfinite().all())
    assert torch.equal(deq[0], w[0])  # a zero group stays exactly zero
    for r in (1, 2):  # a constant group is one code away from exact: only the scale's rounding remains
        assert torch.allclose(deq[r], w[r], rtol=1e-3, atol=0)
    if method == "rtn":  # every value within half a step of the grid, however small or large the row
        step = q.scales.float()  # (6, 1)
        assert bool(((deq - w).abs() <= 0.5 * step * (1 + 1e-3) + 1e-30).all())
    for r in (3, 4):  # tiny and huge rows: a relative error of a normal row's, not everything rounded away
        assert _rel(deq[r], w[r]) < 2.5 * _rel(deq[5], w[5]) + 1e-6


def test_fp32_scales_survive_save_and_load(tmp_path: Path) -> None:
    model, _ = tiny_model("llama", "causal-lm", seed=0)
    layer = model.model.layers[0].self_attn.q_proj
    layer.weight.data.mul_(1e-4)  # scales below fp16's 2^-14 in 8 bits
    with pytest.warns(UserWarning, match="fp32 scales"):
        hfx.apply(model, "quant", bits=8, group_size=0, sym=True)
    qs = model.model.layers[0].self_attn.q_proj.scales
    assert qs.dtype == torch.float32
    hfx.save(model, tmp_path / "q")
    loaded = hfx.load(tiny_model("llama", "causal-lm", seed=0)[0], tmp_path / "q")
    assert torch.equal(loaded.model.layers[0].self_attn.q_proj.scales, qs)
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_tied_output_layer_is_refused_by_name() -> None:
    model, _ = tiny_model("gpt2", "causal-lm", seed=0)
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(HfxError, match="'lm_head.weight'.*shared with 'transformer.wte.weight'"):
        hfx.apply(model, "quant", bits=8, target_modules=["lm_head"])
