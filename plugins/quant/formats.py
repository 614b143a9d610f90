"""Floating-point formats simulated in software: fp16, bf16, fp8 e4m3 / e5m2 and fp8 e3m4.

A float with e exponent bits and m mantissa bits is (-1)^s * 2^(E - bias) * 1.M (normal numbers) or
(-1)^s * 2^(1 - bias) * 0.M (subnormal, E = 0), with bias = 2^(e-1) - 1. From that:

- smallest normal 2^(1 - bias); smallest subnormal 2^(1 - bias - m);
- largest finite: IEEE-style formats (fp16, bf16, e5m2 and e3m4) keep the top exponent for
  inf/NaN, so it is (2 - 2^-m) * 2^(2^e - 2 - bias); e4m3 "fn" (finite, no inf, as torch.float8_e4m3fn and
  the OCP fp8 spec) uses the top exponent for numbers too and gives up only the all-ones mantissa (NaN):
  (2 - 2^(1-m)) * 2^(2^e - 1 - bias) = 448;
- relative precision: the gap from 1 to the next number is 2^-m (machine epsilon); rounding to nearest
  errs by at most half of it, 2^-(m+1), relative, for normal numbers.

:func:`cast` rounds to nearest, ties to even (IEEE's default), with subnormals. Overflow gives inf in the
IEEE-style formats and saturates at the largest finite value in e4m3fn (what torch's cast does). e3m4
(1 sign, 3 exponent, 4 mantissa bits: one of the exponent/mantissa splits compared by Kuzmin et al. 2022, https://arxiv.org/abs/2208.09225, which has no
torch dtype) is taken IEEE-style here: bias 3, largest 15.5, smallest normal 0.25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["BF16", "E3M4", "E4M3", "E5M2", "FORMATS", "FP16", "FloatFormat", "cast", "cast_error"]


@dataclass(frozen=True)
class FloatFormat:
    """A sign bit, ``exponent_bits`` and ``mantissa_bits``; ``finite_only`` for the e4m3fn layout."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    finite_only: bool = False
    torch_dtype: torch.dtype | None = None

    @property
    def bias(self) -> int:
        """Exponent bias, 2^(e - 1) - 1 (IEEE 754; OCP's FP8 formats use the same)."""
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def max_exponent(self) -> int:
        """Largest unbiased exponent of a finite number (all-ones field: inf/NaN unless finite_only)."""
        top = 2**self.exponent_bits - 1  # all-ones exponent field
        return (top if self.finite_only else top - 1) - self.bias

    @property
    def max_finite(self) -> float:
        """Largest finite value (fp16: 65504; e4m3fn: 448, its top code being NaN)."""
        mant = 2 - 2.0 ** (1 - self.mantissa_bits) if self.finite_only else 2 - 2.0**-self.mantissa_bits
        return mant * 2.0**self.max_exponent

    @property
    def min_normal(self) -> float:
        """Smallest positive normal number, 2^(1 - bias)."""
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal number, 2^(1 - bias - mantissa bits)."""
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def epsilon(self) -> float:
        """Gap between 1 and the next larger number: the relative precision."""
        return 2.0**-self.mantissa_bits

    def describe(self) -> dict[str, float | str]:
        """One table row: name, bit widths, range, epsilon and decimal digits."""
        return {"format": self.name, "bits": 1 + self.exponent_bits + self.mantissa_bits,
                "exponent": self.exponent_bits, "mantissa": self.mantissa_bits, "max": self.max_finite,
                "min_normal": self.min_normal, "min_subnormal": self.min_subnormal, "epsilon": self.epsilon,
                "decimal_digits": round(self.mantissa_bits * math.log10(2) + math.log10(2), 2)}


FP16 = FloatFormat("fp16", 5, 10, torch_dtype=torch.float16)
BF16 = FloatFormat("bf16", 8, 7, torch_dtype=torch.bfloat16)
E4M3 = FloatFormat("fp8 e4m3fn", 4, 3, finite_only=True, torch_dtype=torch.float8_e4m3fn)
E5M2 = FloatFormat("fp8 e5m2", 5, 2, torch_dtype=torch.float8_e5m2)
E3M4 = FloatFormat("fp8 e3m4", 3, 4)
FORMATS = (FP16, BF16, E5M2, E4M3, E3M4)


def cast(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Round ``x`` to the nearest value of ``fmt`` (ties to even); same shape, returned as float32."""
    x64 = x.double()
    _, exp = torch.frexp(x64)  # x = f * 2^exp with |f| in [0.5, 1): floor(log2|x|) = exp - 1
    e = torch.clamp(exp - 1, min=1 - fmt.bias)  # subnormals share the smallest normal exponent's step
    step = torch.pow(2.0, (e - fmt.mantissa_bits).double())  # spacing of representable numbers near x
    y = torch.round(x64 / step) * step  # torch.round rounds half to even
    big = y.abs() > fmt.max_finite
    if fmt.finite_only:
        y = torch.where(big, torch.sign(y) * fmt.max_finite, y)
    else:
        y = torch.where(big, torch.sign(y) * math.inf, y)
    y = torch.where(torch.isnan(x64), x64, torch.where(torch.isinf(x64), x64 if not fmt.finite_only
                                                      else torch.sign(x64) * fmt.max_finite, y))
    return y.float()


def cast_error(weights: list[torch.Tensor], fmt: FloatFormat, scaled: bool = False) -> dict[str, float]:
    """Error of casting every tensor in ``weights`` to ``fmt``.

    Returns the relative error ||W - cast(W)|| / ||W|| over all of them, the share of nonzero weights that
    become 0 (underflow) and the share that overflow. ``scaled=True`` first multiplies each tensor by
    max_finite / absmax (one fp32 scale per tensor, how fp8 is used in practice) and divides after.
    Overflowing values count in the error as if saturated at the largest finite number.
    """
    num = den = 0.0
    under = over = total = 0
    for w in weights:
        w = w.detach().double()  # float64: max_finite / absmax overflows float32 for bf16's range
        s = fmt.max_finite / float(w.abs().max().clamp(min=1e-30)) if scaled else 1.0
        ws = w * s
        over += int((ws.abs() > fmt.max_finite).sum())
        c = cast(ws, fmt)
        c = torch.where(torch.isfinite(c), c, torch.sign(ws) * fmt.max_finite) / s  # overflow counted as saturated
        under += int(((c == 0) & (w != 0)).sum())
        total += w.numel()
        num += float((w - c).double().square().sum())
        den += float(w.double().square().sum())
    return {"rel_error": math.sqrt(num / max(den, 1e-300)), "underflow": under / max(total, 1),
            "overflow": over / max(total, 1)}
