"""Simulated float formats: ranges by hand, casts bit-exact against torch, casting errors."""

from __future__ import annotations

import pytest
import torch

from hfx_plugins.quant.checks import _cast_mismatches
from hfx_plugins.quant.formats import BF16, E3M4, E4M3, E5M2, FP16, cast, cast_error


def test_ranges_by_hand() -> None:
    # IEEE: max = (2 - 2^-m) 2^(2^e - 2 - bias); e4m3fn: (2 - 2^(1-m)) 2^(2^e - 1 - bias) = 1.75 * 256.
    assert (FP16.max_finite, FP16.min_normal, FP16.epsilon) == (65504.0, 2.0**-14, 2.0**-10)
    assert (E4M3.max_finite, E4M3.min_normal, E4M3.min_subnormal) == (448.0, 2.0**-6, 2.0**-9)
    assert E5M2.max_finite == 57344.0 and BF16.epsilon == 2.0**-7
    # e3m4 (Kuzmin et al. 2022), IEEE-style: bias 3, max 1.9375 * 8, smallest normal 2^-2, subnormal step 2^-6
    assert (E3M4.max_finite, E3M4.min_normal, E3M4.min_subnormal, E3M4.epsilon) == (
        15.5, 0.25, 2.0**-6, 0.0625)


def test_e3m4_rounding_by_hand() -> None:
    x = torch.tensor([1.03, 1.04, 1.03125, 1.09375, 0.01, 0.007, 16.0, -15.8, 15.7])
    # step 1/16 near 1: 1.03 -> 1.0, 1.04 -> 1.0625; ties to even: 1 + 1/32 -> 1.0, 1 + 3/32 -> 1.125;
    # subnormal step 1/64: 0.01 -> 1/64, 0.007 -> 0; from 15.75 (15.5 + half its step of 0.5) on -> inf
    assert cast(x, E3M4).tolist() == [1.0, 1.0625, 1.0, 1.125, 0.015625, 0.0, float("inf"), -float("inf"), 15.5]


@pytest.mark.parametrize("fmt", [FP16, BF16, E4M3, E5M2])
def test_cast_is_bit_exact_against_torch(fmt) -> None:  # type: ignore[no-untyped-def]
    assert _cast_mismatches(fmt) == 0  # reference: torch's own .to(dtype) casts


def test_scaled_cast_error() -> None:
    w = [torch.randn(64, 64, generator=torch.Generator().manual_seed(0)) * 0.02]
    for fmt in (FP16, BF16):  # wide formats: scaling changes little (and must not overflow float32)
        raw, scaled = cast_error(w, fmt), cast_error(w, fmt, scaled=True)
        assert scaled["rel_error"] < 2 * fmt.epsilon and raw["rel_error"] < 2 * fmt.epsilon
    raw, scaled = cast_error(w, E3M4), cast_error(w, E3M4, scaled=True)
    assert raw["underflow"] > 0.3 and scaled["underflow"] < 0.05  # 0.02-sized weights sit below 0.25
    assert scaled["rel_error"] < raw["rel_error"]
