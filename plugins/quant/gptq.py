"""GPTQ: choosing the codes with calibration inputs (Frantar et al. 2022, https://arxiv.org/abs/2210.17323).

Round to nearest (RTN, :meth:`QuantLinear.from_float`) rounds each weight on its own. What a linear layer
y = x W^T loses is its output error on real inputs X (n tokens, in features)::

    ||X W^T - X Q^T||^2 = (n / 2) sum over rows r of (w_r - q_r) H (w_r - q_r)^T,   H = 2 X^T X / n (in, in)

GPTQ lowers it with the Optimal Brain Surgeon step, one input column j at a time, the same order for every row::

    q_j = round(w_j) on the grid of j's group                 (out,)
    e   = (w_j - q_j) / [H_F^-1]_jj                            (out,)   F = columns not rounded yet, j included
    w_k -= e [H_F^-1]_jk   for every k in F, k != j            (out,)   H_F: H restricted to F

so the columns still free absorb each rounding error in the direction the inputs make cheapest. With the
paper's three devices, all kept here:

1. one column order for all rows: the inverse Hessians H_F^-1 are shared by the rows;
2. Cholesky: the row [H_F^-1]_{j, j:} / [H_F^-1]_jj, with F = {j, j+1, ...}, is row j of the upper Cholesky
   factor U of H^-1 (H^-1 = U^T U) divided by U_jj, so U is computed once and nothing is re-inverted;
3. lazy batches: columns are rounded in blocks of ``block_size``; inside a block the update touches the
   block only, and the columns after it receive the block's errors in one product at the end of the block.

Dead inputs (H_jj = 0: a feature that is 0 on every calibration token) get H_jj = 1 and W[:, j] = 0, and
``damp * mean(diag H)`` is added to the diagonal, as in the paper's reference code
(github.com/IST-DASLab/gptq).

This module is the algorithm on one weight matrix; :mod:`.gptq_inputs` turns calibration data into model
inputs and accumulates H; :mod:`.gptq_blocks` runs the model block by block (``quantize_gptq``, what
``hfx.apply(model, "quant", method="gptq", calibration=...)`` calls).

Departures from the paper and from the reference code:

- **Group parameters** (scale, zero point) are chosen when the first column of a group is reached, from the
  group's *current* weights (already moved by the errors of earlier columns), with the same search as RTN
  (:func:`clip.search_qparams`: clipping-range search and scale refit, or min/max with ``clip_steps=0``) and
  stored exactly as :class:`QuantLinear` stores them (fp16 scales, uint8 zero points). The reference reads
  the group from ``W`` rather than from the block being updated, which misses the updates made inside the
  block when the group size is below the block size; here ``block_size`` is rounded down to a multiple of
  the group size (at least one group), so every group lies inside one block and is read after all its updates.
  Per-channel and per-tensor parameters are chosen once from the whole weight before the first column, as
  the reference does. A group size that does not divide the input features gives a shorter last group,
  exactly as RTN (576 = 4 x 128 + 64).
- **No act_order** (the reference's optional column reordering by diag(H)), so groups stay contiguous and the
  storage is RTN's.
- **A failed Cholesky factorisation** (float32, as the reference) is retried in float64, then with the damping
  multiplied by 10 (up to 4 times), instead of stopping.
- **One CPU thread for the column loop** (the forward passes keep the caller's setting): see
  :func:`_one_cpu_thread`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.quant.affine import affine_codes, code_range, dequantize, n_groups, to_groups
from hfx_plugins.quant.clip import search_qparams
from hfx_plugins.quant.config import QuantConfig
from hfx_plugins.quant.layer import QuantLinear, checked_weight

__all__ = ["gptq_layer", "gptq_quantize"]


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U of (H + lambda I)^-1, lambda = damp * mean(diag H): (in, in) -> (in, in) fp32.

    float32 as the reference; a failed factorisation is retried in float64, then with 10x the damping.
    """
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    mean_diag = float(h.diagonal().mean())
    lam = damp * mean_diag
    for attempt in range(6):
        hd = (h + lam * eye) if attempt == 0 else (h + lam * eye).double()
        low, info = torch.linalg.cholesky_ex(hd)  # H + lam I = L L^T
        if int(info) == 0:
            up, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(low), upper=True)  # H^-1 = U^T U
            if int(info) == 0 and torch.isfinite(up).all():
                return up.float()
        if attempt > 0:
            lam = max(10 * lam, 1e-6 * mean_diag)
    raise HfxError(f"GPTQ: the calibration Hessian is not positive definite even with damping {lam:.3g}; "
                   "give more calibration tokens or a larger quant.damp_percent")


def _group_qparams(cols: torch.Tensor, g: int, bits: int, symmetric: bool,
                   clip_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero), each (out,), of one group given as its columns (out, gl), gl <= g.

    A short group is padded to g by repeating its last column with mask 0, as :func:`affine.to_groups` pads RTN's
    last group, so that the same weights give exactly RTN's parameters.
    """
    out, gl = cols.shape
    mask = torch.ones(out, g, dtype=cols.dtype, device=cols.device)  # (out, g)
    if gl < g:
        cols = torch.cat([cols, cols[:, -1:].expand(out, g - gl)], dim=1)
        mask[:, gl:] = 0
    scale, zero = search_qparams(cols.reshape(out, 1, g), mask.view(out, 1, g), bits, symmetric, steps=clip_steps)
    return scale.view(out), zero.view(out)


@torch.no_grad()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                  clip_steps: int = 20, damp: float = 0.01,
                  block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ codes of one weight: w (out, in), h (in, in) -> codes (out, in) uint8, scale and zero (rows, G) fp32.

    ``rows`` and ``G`` follow :class:`QuantLinear` (rows = 1 for per-tensor, else out; G groups per row); the
    scales hold fp16 values and the zero points integers, ready for :meth:`QuantLinear.from_codes`.
    """
    w = w.detach().float().clone()  # (out, in): columns after the current one absorb the rounding errors
    h = h.detach().float().clone()  # (in, in)
    out, inp = w.shape
    dead = h.diagonal() == 0  # (in,): inputs that are 0 on every calibration token
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = _inverse_cholesky(h, damp)  # (in, in) upper, H^-1 = U^T U
    qrange = code_range(bits, symmetric)
    if group_size > 0:
        g = min(group_size, inp)  # a group size above in_features is one group per row, as in RTN
        scale = w.new_zeros(out, n_groups(inp, g))  # (out, G), filled group by group below
        zero = w.new_zeros(out, n_groups(inp, g))
        step = g * max(1, block_size // g)  # whole groups per block: a group is read after all its updates
    else:  # per channel (0) or per tensor (-1): one choice from the whole weight, before any column
        groups, mask = to_groups(w, group_size)  # (rows, 1, in) or (1, 1, out * in)
        s, z = search_qparams(groups, mask, bits, symmetric, steps=clip_steps)  # (rows, 1, 1)
        scale, zero = s.view(-1, 1), z.view(-1, 1)  # (rows, 1)
        g, step = inp, block_size
    codes = torch.empty(inp, out, dtype=torch.uint8, device=w.device)  # transposed: one row per column of W
    scale_t, zero_t = scale.t().contiguous(), zero.t().contiguous()  # (G, rows): one row per group
    for i1 in range(0, inp, step):
        i2 = min(i1 + step, inp)
        # The block transposed, (B, out): each column of W is a contiguous row, and so is each update below.
        wt1 = w[:, i1:i2].t().contiguous()
        u1 = u[i1:i2, i1:i2]  # (B, B)
        err1 = torch.empty_like(wt1)  # (B, out): the scaled errors e of the block's columns
        for i in range(i2 - i1):
            col = i1 + i
            if group_size > 0 and col % g == 0:
                s, z = _group_qparams(wt1[i:i + g].t(), g, bits, symmetric, clip_steps)  # (out,) each
                scale_t[col // g], zero_t[col // g] = s, z
            s_col, z_col = scale_t[col // g], zero_t[col // g]  # (out,) or (1,) per tensor
            wc = wt1[i]  # (out,): column col of W, with the errors of the columns before it
            q = affine_codes(wc, s_col, z_col, *qrange)  # (out,), RTN's formula on the updated column
            codes[col] = q.to(torch.uint8)
            e = (wc - dequantize(q, s_col, z_col)) / u1[i, i]  # (out,)
            wt1[i + 1:].addr_(u1[i, i + 1:], e, alpha=-1.0)  # the rest of the block absorbs the error
            err1[i] = e
        w[:, i2:].addmm_(err1.t(), u[i1:i2, i2:], alpha=-1.0)  # lazy update of every column after the block
    return codes.t().contiguous(), scale_t.t().contiguous(), zero_t.t().contiguous()


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the column loop on one CPU thread: its operations touch one column (or one group) at a time, and
    handing such small pieces to a second thread costs more than it saves (measured here: 3 smollm2 blocks in
    210 s with 2 threads on a busy 2-core machine, 47 s with 1). The forward passes keep the caller's setting."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gptq_layer(module: nn.Module, h: torch.Tensor, cfg: QuantConfig, name: str = "") -> QuantLinear:
    """A :class:`QuantLinear` for ``module`` (``nn.Linear`` or ``Conv1D``) with GPTQ codes from Hessian ``h``.

    ``h`` is (in, in): H = 2 X^T X / n over the n calibration tokens' inputs X (n, in) (Frantar et al. 2022).
    """
    w = checked_weight(module, name)  # (out, in)
    with _one_cpu_thread(w.device):
        codes, scale, zero = gptq_quantize(w, h, cfg.bits, cfg.group_size, cfg.sym, cfg.clip_steps, cfg.damp_percent,
                                           cfg.block_size)
    return QuantLinear.from_codes(codes, scale, zero, cfg.bits, cfg.group_size, cfg.sym, module.bias,
                                  cfg.activations)
