"""Affine quantization of a weight matrix: x_q = round(x / s + Z), dequantized as (x_q - Z) * s.

Granularity follows ``group_size`` (torchao calls this the block size):

- ``-1``: one (s, Z) for the whole tensor;
- ``0``: one per output channel (row of the (out, in) weight);
- ``N > 0``: one per group of N consecutive input features of a row.

When N does not divide ``in_features`` (smollm2's 576 with N = 128) the last group of each row is simply
shorter (576 = 4 x 128 + 64): its scale and zero point are computed from its real values only, and only
real values are stored, so nothing is padded on disk. A group size above ``in_features`` is one group per row.

Codes are unsigned, in [qmin, qmax] (:func:`code_range`):

- asymmetric: s = (hi - lo) / (2^b - 1), Z = round(-lo / s), codes in [0, 2^b - 1]. The range [lo, hi] is
  widened to contain 0 so that Z is a valid code and 0.0 is represented exactly (PyTorch's observers do the same);
- symmetric: s = absmax / (2^(b-1) - 1) and Z = 2^(b-1) fixed, codes in [1, 2^b - 1]: the "restricted" range
  that bitsandbytes' int8 uses (round(x * 127 / absmax), in [-127, 127]) and torch.ao's symmetric observers with
  quant_min = -127. Code 0 stays unused even when the clip search narrows the range, so the grid is symmetric
  around 0 and x and -x always get opposite codes.

This module holds the one affine formula every part of ``quant`` and ``qat`` uses (RTN, the clip search, GPTQ,
the validate checks, activations, QAT's fake quantization): :func:`affine_codes` (round and clamp),
:func:`dequantize`, and :func:`fake_quantize` / :func:`fake_quantize_mask` built from the two. Its arithmetic is
torch's ``fake_quantize_per_channel_affine`` (CPU): codes = clamp(round(x * (1 / s)) + Z, qmin, qmax) with
``round`` half to even, Z added after rounding; the tests check equality bit for bit.

Scales are stored in fp16 (2 bytes) when every scale of the layer is an fp16 normal number, in
[2^-14, 65504]. A layer whose weights are tiny (N(0, 1e-3) in 8 bits wants scales near 2.4e-5) or huge
(absmax above 65504 * 127) keeps fp32 scales instead (4 bytes, counted in its storage bits): clamping
at 2^-14 would round most codes of such a layer to zero, and overflowing would make them inf. An
all-zero group gets the scale 2^-14 (any scale reproduces it; its codes are all Z). bitsandbytes keeps
its absmax statistics in fp32 for the same reason.
"""

from __future__ import annotations

import math

import torch

from hfx.errors import HfxError
from hfx_plugins.quant.config import SUPPORTED_BITS

__all__ = [
    "MIN_SCALE",
    "SCALE_DTYPE",
    "SUPPORTED_BITS",
    "affine_codes",
    "check_bits",
    "choose_qparams",
    "code_range",
    "dequantize",
    "fake_quantize",
    "fake_quantize_mask",
    "group_ranges",
    "n_groups",
    "quantize",
    "round_scales",
    "scale_storage_dtype",
    "to_groups",
    "ungroup",
]

SCALE_DTYPE = torch.float16
"""The usual storage type of scales; a layer whose scales fp16 cannot hold keeps them in fp32."""
MIN_SCALE = 2.0**-14  # fp16's smallest normal number
FP16_MAX = 65504.0
_FP32_TINY = torch.finfo(torch.float32).tiny


def round_scales(scale: torch.Tensor) -> torch.Tensor:
    """Scales (any shape, fp32) as they will be stored: fp16-rounded when all fit fp16's normal range, else fp32.

    A zero scale (an all-zero group) becomes 2^-14. The result is fp32 holding the stored values, so codes
    are computed with exactly the scale that dequantization will use.
    """
    s = torch.where(scale > 0, scale, torch.full_like(scale, MIN_SCALE))
    if bool(((s >= MIN_SCALE) & (s <= FP16_MAX)).all()):
        return s.to(SCALE_DTYPE).float()
    return s.clamp(min=_FP32_TINY)  # outside fp16's range: keep fp32 (see the module docstring)


def scale_storage_dtype(scale: torch.Tensor) -> torch.dtype:
    """fp16 when every value of ``scale`` (any shape) is exactly an fp16 normal number, else fp32."""
    fits = (scale >= MIN_SCALE) & (scale <= FP16_MAX) & (scale.to(SCALE_DTYPE).float() == scale.float())
    return SCALE_DTYPE if bool(fits.all()) else torch.float32


def check_bits(bits: int) -> None:
    """Accept a bit width the packing supports.

    Raises:
        HfxError: ``bits`` is not one of :data:`SUPPORTED_BITS` (2, 3, 4, 8).
    """
    if bits not in SUPPORTED_BITS:
        raise HfxError(f"unsupported bit width {bits}; choose one of {', '.join(map(str, SUPPORTED_BITS))}")


def n_groups(in_features: int, group_size: int) -> int:
    """Groups per row: 1 for per-tensor and per-channel, ceil(in / N) for groups of N.

    Raises:
        HfxError: ``group_size`` below -1.
    """
    if group_size < -1:
        raise HfxError(f"group_size must be -1 (per tensor), 0 (per channel) or a positive size, got {group_size}")
    return 1 if group_size <= 0 else math.ceil(in_features / group_size)


def to_groups(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reshape an (out, in) weight into groups: returns ``(values, mask)``, both (rows, G, g).

    A short last group is padded by repeating the row's last value (which changes neither its min nor
    its max); ``mask`` is 1 on real values and 0 on padding, so errors are counted on real values only.
    Per tensor gives (1, 1, out * in); per channel (out, 1, in).
    """
    out, inp = w.shape
    if group_size == -1:
        return w.reshape(1, 1, -1), torch.ones(1, 1, w.numel(), dtype=w.dtype, device=w.device)
    g = inp if group_size == 0 else min(group_size, inp)
    G = n_groups(inp, g)
    pad = G * g - inp
    mask = torch.ones(out, G * g, dtype=w.dtype, device=w.device)
    if pad:
        w = torch.cat([w, w[:, -1:].expand(out, pad)], dim=1)  # (out, G * g)
        mask[:, inp:] = 0
    return w.reshape(out, G, g), mask.reshape(out, G, g)


def group_ranges(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (min, max), each (rows, G, 1); padding repeats a real value so it does not matter."""
    return groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)


def choose_qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point (as floats holding integers) for the range [lo, hi]; shapes follow ``lo``."""
    qmax = 2**bits - 1
    if symmetric:
        half = 2 ** (bits - 1)
        absmax = torch.maximum(lo.abs(), hi.abs())
        scale = round_scales(absmax / (half - 1))
        return scale, torch.full_like(scale, float(half))
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)  # contain 0 so that Z is a code (see module docstring)
    scale = round_scales((hi - lo) / qmax)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    return scale, zero


def code_range(bits: int, symmetric: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of unsigned ``bits``-bit codes: (0, 2^b - 1), or (1, 2^b - 1) when symmetric (module docstring)."""
    return (1 if symmetric else 0), 2**bits - 1


@torch.no_grad()
def affine_codes(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float, qmin: float | None,
                 qmax: float | None) -> torch.Tensor:
    """Codes clamp(round(x * (1 / s)) + Z, qmin, qmax) as floats; ``x`` any shape, ``scale``/``zero`` broadcast to it.

    torch's ``fake_quantize_per_channel_affine`` arithmetic (round half to even, Z added after rounding, x
    multiplied by the fp32 reciprocal of s), so that the same (s, Z) give the same codes as torch; rounding
    x / s + Z instead can differ by one where x / s sits just below a half (1.4999999 + 128 rounds to 129.5, then
    to 130). ``qmin``/``qmax`` None: no clamp on that side. Computed without autograd (round has no gradient;
    :func:`fake_quantize_mask` gives the straight-through mask) and in place on one temporary.
    """
    t = x * (scale.reciprocal() if isinstance(scale, torch.Tensor) else 1.0 / scale)  # one temporary, x's shape
    t.round_().add_(zero)
    return t.clamp_(qmin, qmax) if qmin is not None or qmax is not None else t


def quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool = False) -> torch.Tensor:
    """Stored codes of ``x`` (e.g. groups (rows, G, g) with (s, Z) (rows, G, 1)): same shape, uint8 (:func:`affine_codes`)."""
    return affine_codes(x, scale, zero, *code_range(bits, symmetric)).to(torch.uint8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float) -> torch.Tensor:
    """(x_q - Z) * s in fp32; ``scale``/``zero`` broadcast to ``codes`` (groups (rows, G, g) with (rows, G, 1))."""
    return (codes.float() - zero) * scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float, qmin: float,
                  qmax: float) -> torch.Tensor:
    """Quantize then dequantize without leaving floating point: x (any shape) -> same shape, equal bit for bit to
    ``torch.fake_quantize_per_channel_affine`` with the same (s, Z, qmin, qmax)."""
    return dequantize(affine_codes(x, scale, zero, qmin, qmax), scale, zero)


def fake_quantize_mask(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float, qmin: float,
                       qmax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fake_quantize` and the mask of the values whose rounded code fell inside [qmin, qmax], both x's shape.

    The mask is the straight-through estimator's gradient (torch's ``_fake_quantize_per_tensor_affine_cachemask``
    keeps the same one): 1 inside the range, 0 where the code was clamped.
    """
    codes = affine_codes(x, scale, zero, None, None)  # unclamped
    inside = (codes >= qmin) & (codes <= qmax)
    return dequantize(codes.clamp_(qmin, qmax), scale, zero), inside


def ungroup(groups: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(rows, G, g) -> (out, in): undo :func:`to_groups`, dropping the padding of a short last group."""
    out, inp = shape
    return groups.reshape(out, -1)[:, :inp] if groups.shape[0] == out else groups.reshape(out, inp)
