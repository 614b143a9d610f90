"""Choosing each group's range to minimise its quantization error, not just taking min and max.

Plain min/max scales waste levels on the few largest weights: with 4 bits and groups of 64 they lose to
bitsandbytes' nf4 (minilm sentence embeddings vs fp32: cosine 0.963 vs nf4's 0.971). Two cheap steps fix most of it, both
data-free (no calibration set):

1. Clipping-range search (as AWQ's ``auto_clip`` does, but on the weight error itself, unweighted by
   activations): for alpha on a grid from 1 down to ``min_alpha``, quantize each group with the range
   [alpha * lo, alpha * hi] and keep, per group, the alpha whose squared error is smallest. Clipping a
   few large weights buys a finer step for all the others.
2. Least-squares scale refit: with the codes q fixed, the scale minimising sum (w - s (q - Z))^2 is
   s* = sum w (q - Z) / sum (q - Z)^2; it is kept only where it lowers the error (it is rounded to fp16
   like every stored scale, so it can occasionally be worse). Repeated ``refits`` times, re-rounding the
   codes each time (a few rounds of Lloyd-style alternation).

The objective is the squared error (the SQNR that torchao reports, and what a linear layer's output
error grows with), so the mean *absolute* error is not what is minimised; the checks report both.
"""

from __future__ import annotations

import torch

from hfx_plugins.quant.affine import (
    affine_codes,
    choose_qparams,
    code_range,
    fake_quantize,
    group_ranges,
    round_scales,
)

__all__ = ["search_qparams"]


def _group_error(groups: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                 qmax: int, qmin: int = 0) -> torch.Tensor:
    """Masked squared error of each group after fake quantization to codes in [qmin, qmax]: (rows, G, g) -> (rows, G, 1)."""
    t = fake_quantize(groups, scale, zero, qmin, qmax).sub_(groups)  # (rows, G, g); in place from here on
    return t.square_().mul_(mask).sum(-1, keepdim=True)


@torch.no_grad()
def search_qparams(groups: torch.Tensor, mask: torch.Tensor, bits: int, symmetric: bool, steps: int = 20,
                   min_alpha: float = 0.3, refits: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (scale, zero), each (rows, G, 1), chosen to minimise the squared error of ``groups``.

    ``steps = 0`` gives plain min/max (absmax when symmetric) with no search and no refit.
    """
    lo, hi = group_ranges(groups)  # (rows, G, 1) each
    scale, zero = choose_qparams(lo, hi, bits, symmetric)
    if steps <= 0:
        return scale, zero
    qmin, qmax = code_range(bits, symmetric)
    best = _group_error(groups, mask, scale, zero, qmax, qmin)  # alpha = 1 is the first candidate
    for i in range(1, steps + 1):
        alpha = 1.0 - (1.0 - min_alpha) * i / steps
        s, z = choose_qparams(alpha * lo, alpha * hi, bits, symmetric)
        err = _group_error(groups, mask, s, z, qmax, qmin)
        better = err < best
        best = torch.where(better, err, best)
        scale, zero = torch.where(better, s, scale), torch.where(better, z, zero)
    for _ in range(refits):
        q = (affine_codes(groups, scale, zero, qmin, qmax) - zero) * mask  # (rows, G, g): q - Z
        num, den = (groups * q).sum(-1, keepdim=True), q.square().sum(-1, keepdim=True)
        # A group whose codes are all Z (den = 0) keeps its scale.
        s = round_scales(torch.where(den > 0, num / den.clamp(min=1e-30), scale))
        err = _group_error(groups, mask, s, zero, qmax, qmin)
        better = err < best
        best = torch.where(better, err, best)
        scale = torch.where(better, s, scale)
    return scale, zero
