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
(github.com/IST-DASLab/gptq). A model is quantized block by block (transformer layer by layer): the inputs of
the first block are captured on the calibration data; for each block, H is accumulated for each of its linear
layers from the inputs that the already-quantized earlier blocks produce, the layers are quantized, and the
quantized block is run again to give the next block its inputs.

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
  storage is RTN's. Inside a block every linear layer sees inputs computed by the float layers of that block
  (the reference's default; its ``--true-sequential`` option, which requantizes q/k/v before o, is not here).
- **Padding tokens** are left out of H when a batch has an ``attention_mask`` (the reference counts them).
- **A failed Cholesky factorisation** (float32, as the reference) is retried in float64, then with the damping
  multiplied by 10 (up to 4 times), instead of stopping.
- **One CPU thread for the column loop** (the forward passes keep the caller's setting): see
  :func:`_one_cpu_thread`.
- **Layers outside the blocks** (BERT's pooler, a classification head) are quantized after the blocks, from
  one forward pass of the whole, partly quantized, model. A layer that the calibration data never reaches
  (no token, H = 0) is rounded to nearest instead of being zeroed.
- Every block is fed the keyword arguments (attention mask, position embeddings) captured at the first block;
  models whose layers take different masks (sliding-window layers mixed with full attention) are refused.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.quant.affine import n_groups, to_groups
from hfx_plugins.quant.apply import select_linear, set_module
from hfx_plugins.quant.clip import search_qparams
from hfx_plugins.quant.config import QuantConfig
from hfx_plugins.quant.layer import QuantLinear, checked_weight

__all__ = ["Calibration", "calibration_batches", "find_blocks", "gptq_quantize", "quantize_gptq"]

Batch = dict[str, Any]
Calibration = torch.Tensor | Mapping[str, Any] | Iterable[torch.Tensor | Mapping[str, Any]]
"""What ``hfx.apply(model, "quant", method="gptq", calibration=...)`` accepts: a list of batches, each an
``input_ids`` tensor (B, T) or a mapping of model inputs (what a tokenizer returns with ``return_tensors="pt"``,
``attention_mask`` included); or one such mapping; or one (n, T) tensor, split into batches of 8 rows."""


# --- one weight matrix ---------------------------------------------------------------------------------------

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
                   "give more calibration tokens or a larger quant.damp")


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
    qmax = 2**bits - 1
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
            q = torch.clamp(torch.round(wc / s_col + z_col), 0, qmax)  # (out,), as affine.quantize rounds
            codes[col] = q.to(torch.uint8)
            e = (wc - (q - z_col) * s_col) / u1[i, i]  # (out,)
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
    """A :class:`QuantLinear` for ``module`` (``nn.Linear`` or ``Conv1D``) with GPTQ codes from Hessian ``h``."""
    w = checked_weight(module, name)  # (out, in)
    with _one_cpu_thread(w.device):
        codes, scale, zero = gptq_quantize(w, h, cfg.bits, cfg.group_size, cfg.symmetric, cfg.clip_steps, cfg.damp,
                                           cfg.block_size)
    return QuantLinear.from_codes(codes, scale, zero, cfg.bits, cfg.group_size, cfg.symmetric, module.bias,
                                  cfg.activations)


# --- calibration inputs and Hessians -------------------------------------------------------------------------

def calibration_batches(calibration: Calibration, device: torch.device) -> list[Batch]:
    """Normalise what the user gives (see :data:`Calibration`) to a list of model-input dicts on ``device``."""
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2:
            raise HfxError(f"calibration: a tensor must be input_ids of shape (n, T), got {tuple(calibration.shape)}")
        calibration = list(calibration.split(8))
    elif isinstance(calibration, Mapping):
        calibration = [calibration]
    out: list[Batch] = []
    for b in calibration:
        if isinstance(b, torch.Tensor):
            b = {"input_ids": b if b.dim() == 2 else b.view(1, -1)}  # (B, T)
        elif isinstance(b, Mapping):
            b = dict(b)
        else:
            raise HfxError(f"calibration: each batch must be an input_ids tensor or a dict of model inputs, "
                           f"got {type(b).__name__}")
        out.append({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()})
    if not out:
        raise HfxError("calibration is empty; give at least one batch of input_ids")
    return out


def _kept_tokens(batch: Batch) -> torch.Tensor | None:
    """(B * T,) bool: the tokens that count in H (not padding), or None when the batch has no attention_mask."""
    mask = batch.get("attention_mask")
    return None if mask is None or mask.dim() != 2 else mask.reshape(-1).bool()


class _Hessians:
    """Forward hooks that accumulate sum x^T x over the input tokens x (in,) of some linear layers.

    Layers that read the same input tensor (q, k and v; gate and up) share one product per batch.
    ``keep`` selects the tokens of the current batch that count (padding left out); it is used only when the
    layer sees one row per token of the batch.
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.xtx: dict[str, torch.Tensor] = {}  # name -> (in, in) fp32
        self.tokens: dict[str, int] = dict.fromkeys(modules, 0)
        self.keep: torch.Tensor | None = None
        self._last: tuple[torch.Tensor | None, torch.Tensor | None, int] = (None, None, 0)
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x = args[0]  # (..., in)
            if self._last[0] is not x:
                x2 = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, in)
                if self.keep is not None and self.keep.numel() == x2.shape[0]:
                    x2 = x2[self.keep]
                self._last = (x, x2.T @ x2, x2.shape[0])  # (in, in)
            _, prod, n = self._last
            if name in self.xtx:
                self.xtx[name].add_(prod)
            else:
                self.xtx[name] = prod.clone()
            self.tokens[name] += n
        return hook

    def hessian(self, name: str) -> torch.Tensor | None:
        """H = 2 X^T X / n (in, in) for layer ``name``; None when no token reached it."""
        n = self.tokens[name]
        return None if n == 0 else self.xtx[name] * (2.0 / n)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self._last = (None, None, 0)


# --- the model, block by block -------------------------------------------------------------------------------

def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's transformer blocks: the ``nn.ModuleList`` holding the most parameters, and its name.

    ``model.layers`` for Llama, ``encoder.layer`` for BERT, ``transformer.h`` for GPT-2.
    """
    lists = [(sum(p.numel() for p in m.parameters()), n, m) for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise HfxError(f"GPTQ quantizes transformer blocks one after another, and {type(model).__name__} has no "
                       "nn.ModuleList of blocks; use quant.method=rtn")
    _, name, blocks = max(lists, key=lambda t: t[0])
    kinds = {getattr(b, "attention_type", None) for b in blocks}
    if len(kinds) > 1:
        raise HfxError(f"GPTQ replays the first block's attention mask in every block, but {name} mixes attention "
                       f"types {sorted(map(str, kinds))}; use quant.method=rtn for this model")
    return name, blocks


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the first block's inputs are known."""


def _capture(model: nn.Module, block: nn.Module, batches: list[Batch]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The (args, kwargs) the first block receives for each batch; the rest of the model is not run."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append((args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**batch)
            except _Stop:
                continue
            raise HfxError("GPTQ: the model's forward never reached its first block; check the calibration inputs")
    finally:
        handle.remove()
    return seen


def _with_hidden(args: tuple[Any, ...], kwargs: dict[str, Any],
                 hidden: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _output_hidden(out: Any) -> torch.Tensor:
    """A block's output hidden states: the tensor itself, or the first item of a tuple / ModelOutput."""
    return out if isinstance(out, torch.Tensor) else out[0]


class _Dequantized(nn.Module):
    """What a weight-only :class:`QuantLinear` computes, with its weight dequantized once instead of per call.

    Stands in for the new layer while the quantized block is rerun on every calibration batch.
    """

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        self.w, self.b = layer.dequantize(), layer.bias  # (out, in), (out,) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w.to(x.dtype), None if self.b is None else self.b.to(x.dtype))


def _quantize_layers(model: nn.Module, names: list[str], hs: _Hessians, cfg: QuantConfig,
                     report: list[dict[str, Any]] | None) -> dict[str, QuantLinear]:
    """GPTQ layers for ``names`` from the Hessians in ``hs``; the model is not changed yet."""
    done: dict[str, QuantLinear] = {}
    for name in names:
        module = model.get_submodule(name)
        h = hs.hessian(name)
        if h is None:  # never reached by the calibration data: round to nearest rather than zero the weight
            new = QuantLinear.from_float(module, cfg.bits, cfg.group_size, cfg.symmetric, cfg.clip_steps,
                                         cfg.activations, name=name)
        else:
            new = gptq_layer(module, h, cfg, name)
        if report is not None:
            row: dict[str, Any] = {"layer": name, "method": "rtn (no calibration token)" if h is None else "gptq"}
            if h is not None:  # relative output error on the calibration inputs: tr(D H D^T) / tr(W H W^T)
                w = checked_weight(module, name)  # (out, in)
                d = w - new.dequantize()  # (out, in)
                row["rel_output_error"] = float(((d @ h) * d).sum() / ((w @ h) * w).sum().clamp(min=1e-30))
            report.append(row)
        done[name] = new
    return done


@torch.no_grad()
def quantize_gptq(model: nn.Module, cfg: QuantConfig, calibration: Calibration,
                  log: Callable[[str], None] | None = None,
                  report: list[dict[str, Any]] | None = None) -> nn.Module:
    """Quantize ``model``'s selected linear layers in place with GPTQ, block by block (see the module docstring).

    ``calibration``: see :data:`Calibration`. ``log`` receives one progress line per block; ``report``, when
    given, receives one row per layer with its relative output error on the calibration inputs. Returns the
    model, whose quantized layers are ordinary :class:`QuantLinear` (saved and loaded as RTN's).
    """
    device = next(model.parameters()).device
    batches = calibration_batches(calibration, device)
    names = select_linear(model, cfg.target_modules, cfg.exclude_modules)
    prefix, blocks = find_blocks(model)
    per_block = [[n for n in names if n.startswith(f"{prefix}.{i}.")] for i in range(len(blocks))]
    inside = {n for ns in per_block for n in ns}
    outside = [n for n in names if n not in inside]
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    was_training = model.training
    model.eval()
    if use_cache is not None:
        config.use_cache = False  # no KV cache: the blocks are replayed many times on the same inputs
    start = time.perf_counter()
    try:
        if inside:
            inputs = _capture(model, blocks[0], batches)  # [(args, kwargs)] per batch
            last = max(i for i, ns in enumerate(per_block) if ns)
            for i in range(last + 1):
                block = blocks[i]
                new: dict[str, QuantLinear] = {}
                if per_block[i]:
                    hs = _Hessians({n: model.get_submodule(n) for n in per_block[i]})
                    try:
                        for (args, kwargs), batch in zip(inputs, batches, strict=True):
                            hs.keep = _kept_tokens(batch)
                            block(*args, **kwargs)
                    finally:
                        hs.remove()
                    new = _quantize_layers(model, per_block[i], hs, cfg, report)
                    del hs
                    for name, layer in new.items():
                        set_module(model, name, _Dequantized(layer) if layer.act_mode == "none" else layer)
                try:
                    if i < last:  # the quantized block gives the next block its inputs
                        inputs = [_with_hidden(a, k, _output_hidden(block(*a, **k))) for a, k in inputs]
                finally:
                    for name, layer in new.items():
                        set_module(model, name, layer)
                if log is not None:
                    log(f"  gptq: block {i + 1}/{last + 1} ({len(per_block[i])} layers), "
                        f"{time.perf_counter() - start:.0f} s")
            del inputs
        if outside:  # heads and poolers: one forward of the whole model, its blocks already quantized
            hs = _Hessians({n: model.get_submodule(n) for n in outside})
            try:
                for batch in batches:
                    hs.keep = _kept_tokens(batch)
                    model(**batch)
            finally:
                hs.remove()
            for name, layer in _quantize_layers(model, outside, hs, cfg, report).items():
                set_module(model, name, layer)
    finally:
        if use_cache is not None:
            config.use_cache = use_cache
        model.train(was_training)
    return model
