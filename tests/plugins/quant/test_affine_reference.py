"""The one affine formula (``affine.affine_codes``) against torch's and bitsandbytes' own quantizers.

References: ``torch.fake_quantize_per_channel_affine`` / ``torch.fake_quantize_per_tensor_affine`` (CPU:
clamp(nearbyint(x * (1 / s)) + Z, qmin, qmax), round half to even, Z added after rounding), and bitsandbytes'
``int8_vectorwise_quant`` (round(x * 127 / absmax), codes in the restricted range [-127, 127]).
"""

from __future__ import annotations

import pytest
import torch

from hfx_plugins.quant.affine import (
    affine_codes,
    choose_qparams,
    code_range,
    fake_quantize,
    fake_quantize_mask,
    group_ranges,
    quantize,
    to_groups,
    ungroup,
)
from hfx_plugins.quant.checks import fake_quant_weight
from hfx_plugins.quant.layer import QuantLinear, dynamic_int8


def _heavy(rows: int = 48, cols: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)  # not the global generator: other tests' layers stay as they were
    return torch.randn(rows, cols, generator=g) * torch.randn(rows, cols, generator=g).exp()  # heavy tails


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_fake_quantize_equals_torch_per_channel_bit_for_bit(bits: int, symmetric: bool) -> None:
    w = _heavy()
    groups, _ = to_groups(w, 16)  # (48, 6, 16)
    lo, hi = group_ranges(groups)
    scale, zero = choose_qparams(0.6 * lo, 0.6 * hi, bits, symmetric)  # a narrowed range: many values clamp
    qmin, qmax = code_range(bits, symmetric)
    ours = fake_quantize(groups, scale, zero, qmin, qmax)  # (48, 6, 16)
    # torch: each group is a channel of a (48 * 6, 16) tensor
    ref = torch.fake_quantize_per_channel_affine(groups.reshape(-1, 16), scale.reshape(-1), zero.reshape(-1).int(),
                                                 0, qmin, qmax)
    assert torch.equal(ours.reshape(-1, 16), ref)
    codes = quantize(groups, scale, zero, bits, symmetric)
    assert int(codes.min()) == qmin and int(codes.max()) == qmax  # the clamp was exercised on both sides


def test_per_tensor_equals_torch() -> None:
    x = _heavy(seed=1)
    lo, hi = x.min(), x.max()
    scale, zero = choose_qparams(lo * 0.5, hi * 0.5, 8, False)
    ref = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero), 0, 255)
    assert torch.equal(fake_quantize(x, scale, zero, 0, 255), ref)


def test_zero_point_is_added_after_rounding_as_torch_does() -> None:
    # x / s = 1.4999999 (the fp32 just below 1.5), Z = 128: torch rounds 1.4999999 -> 1, then adds Z: 129.
    # Rounding x / s + Z instead (what hfx did) first rounds the sum to the fp32 129.5, then half to even: 130.
    x = torch.tensor([1.4999999, -2.5, 2.5, 0.5, 3.5])
    s, z = torch.tensor(1.0), torch.tensor(128.0)
    assert affine_codes(x, s, z, 0, 255).tolist() == [129.0, 126.0, 130.0, 128.0, 132.0]  # ties to even
    ref = torch.fake_quantize_per_tensor_affine(x, 1.0, 128, 0, 255)
    assert torch.equal(fake_quantize(x, s, z, 0, 255), ref)


def test_symmetric_codes_use_the_restricted_range_of_bitsandbytes() -> None:
    # bitsandbytes int8 codes are round(x * 127 / absmax) in [-127, 127]: -128 never occurs, so a symmetric grid
    # maps x and -x to opposite codes. With Z = 2^(b-1), that is codes in [1, 2^b - 1]; the clip search narrows
    # the range (clipping happens), and code 0 must still never appear.
    w = _heavy(64, 128, seed=2)
    w = torch.cat([w, -w])  # x and -x in every column
    lin = torch.nn.Linear(128, 128, bias=False)
    lin.weight.data = w
    for bits in (2, 4, 8):
        q = QuantLinear.from_float(lin, bits, 32, True, clip_steps=20)
        codes = q.codes().long()  # (128, 128)
        assert int(codes.min()) >= 1
        half = 2 ** (bits - 1)
        assert torch.equal(codes[:64] - half, -(codes[64:] - half))  # opposite values, opposite codes


def test_dynamic_int8_codes_match_bitsandbytes_int8_vectorwise_quant() -> None:
    import bitsandbytes.functional as bnbf

    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(3))
    ref, stats, _ = bnbf.int8_vectorwise_quant(x.clone())  # (16, 256) int8, absmax (16,)
    codes, scale = dynamic_int8(x)
    assert torch.allclose(scale.squeeze(-1) * 127, stats)
    # bnb multiplies by 127 / absmax, hfx by the reciprocal of absmax / 127: one ulp apart at most, so a code may
    # move by one step where x sits on a rounding boundary (none here)
    assert (codes - ref.float()).abs().max() <= 1
    assert (codes != ref.float()).float().mean() < 1e-3


def test_fake_quantize_mask_is_torchs_straight_through_mask() -> None:
    x = (torch.randn(4, 40, generator=torch.Generator().manual_seed(4)) * 3).requires_grad_(True)
    scale, zero = torch.full((4,), 0.1), torch.tensor([0, 3, 7, 15])
    ref = torch.fake_quantize_per_channel_affine(x, scale, zero.int(), 0, 0, 15)
    ref.sum().backward()  # torch's gradient: 1 where the code was inside [0, 15], else 0
    y, inside = fake_quantize_mask(x.detach(), scale[:, None], zero[:, None].float(), 0, 15)
    assert torch.equal(y, ref.detach())
    assert torch.equal(inside.float(), x.grad)
    assert 0 < int(inside.sum()) < inside.numel()


def test_every_copy_is_the_same_formula() -> None:
    # checks.fake_quant_weight (the validate rows) and QuantLinear (RTN storage) give the same weight.
    w = _heavy(seed=5)
    for sym in (False, True):
        lin = torch.nn.Linear(96, 48, bias=False)
        lin.weight.data = w
        stored = QuantLinear.from_float(lin, 3, 16, sym, clip_steps=20).dequantize()
        assert torch.equal(fake_quant_weight(w, 3, 16, sym, clip_steps=20), stored)
    assert torch.equal(ungroup(to_groups(w, 16)[0], tuple(w.shape)), w)
