"""Fast paths for ``QuantLinear`` at inference, chosen by measuring once per shape and machine.

The packed codes, fp16 scales and uint8 zero points of a :class:`~hfx_plugins.quant.layer.QuantLinear` stay the
single source of truth (in memory, in ``state_dict`` and on disk); a kernel may keep a converted copy beside
them, outside ``state_dict``. Candidates, each a function ``(layer, x (M, K) fp32, with_bias) -> y (M, N) fp32``:

- ``dequant``: W = (q - Z) * s by torch's elementwise operations (``QuantLinear.dequantize``), then torch's
  fp32 GEMM. The reference every other path is checked against.
- ``cdequant``: the same W written by hfx's C kernel (``csrc/gemv.c`` via :mod:`.native`: the same two float
  operations per weight, so W is equal bit for bit) into a per-thread scratch buffer reused across layers and
  calls (the size of the largest layer seen, so no page faults per call), then the same GEMM. At many tokens
  (prefill) the GEMM dominates and this path costs little more than an fp32 ``nn.Linear``.
- ``fused`` / ``fused_1t``: hfx's C GEMV on torch's thread count / on one thread: the codes are turned into
  floats in registers, never written out. A decode step is memory-bound, and int8/int4 read 4x/8x fewer bytes
  than fp32 (llama.cpp's Q8_0/Q4 GEMV rest on the same fact). 8 and 4 bits. The bias is added in the kernel.
- ``torch_int8``: torch's ``_weight_int8pack_mm`` (8 bits, one scale per output channel), with the zero
  point folded in as s (128 - Z) sum(x).
- ``torch_int4``: torch's ``_weight_int4pack_mm_for_cpu`` (4 bits, groups of 32/64/128/256 dividing K), whose
  weight is (q - 8) s + z': ours maps with z' = (8 - Z) s.

:func:`choose` times every candidate that applies on the layer's own weights at the call's token-count
bucket (1, up to 8, up to 64), skips any whose output differs from ``dequant`` on that probe (logged), and
remembers the fastest per machine and kernel build in ``$HFX_CACHE/kernels/choices.json`` (delete it to
measure again, e.g. after the machine's load changed for good). More than 64 tokens take ``cdequant`` or
``cdequant_1t`` (the dequantization on one thread) when its W equals ``dequantize()`` bit for bit (checked
once per layer; only the dequantization is timed, as the same GEMM follows), else ``dequant``. The choice happens in
:func:`prepare_kernels` (a named step, once per model) or, for a layer not prepared, in its first inference
call at that bucket (about ten calls of the layer, milliseconds; nothing when ``choices.json`` already has
the answer). Training (inputs that need a gradient) always takes ``dequant``, the only path with a backward.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from hfx_plugins.quant import native

__all__ = ["KERNELS", "applicable", "choose", "fused_library", "prepare_kernels", "run_kernel"]

log = logging.getLogger(__name__)
_choices: dict[str, str] | None = None
_local = threading.local()  # per-thread scratch of cdequant


def fused_library() -> object | None:
    """The compiled C kernels (:func:`.native.library`); None where no C compiler works."""
    return native.library()


# ---------------------------------------------------------------------------------------------------------
# Candidates: (layer, x (M, K) float32 contiguous, with_bias) -> y (M, N) float32
# ---------------------------------------------------------------------------------------------------------

def _matmul(layer: nn.Module, x: torch.Tensor, w: torch.Tensor, with_bias: bool) -> torch.Tensor:
    if with_bias and layer.bias is not None:
        return torch.addmm(layer.bias.float(), x, w.t())  # (M, N): bias added inside the GEMM, as F.linear does
    return x @ w.t()  # (M, K) @ (K, N)


def _dequant(layer: nn.Module, x: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
    return _matmul(layer, x, layer.dequantize(), with_bias)


def _scratch(layer: nn.Module) -> torch.Tensor:
    """This thread's fp32 buffer viewed as (N, K): grown to the largest layer, then reused (no page faults)."""
    n = layer.out_features * layer.in_features
    buf = getattr(_local, "scratch", None)
    if buf is None or buf.numel() < n:
        buf = _local.scratch = torch.empty(n)
    return buf[:n].view(layer.out_features, layer.in_features)


def _cdequant(layer: nn.Module, x: torch.Tensor, with_bias: bool = False, threads: int = 0) -> torch.Tensor:
    w = native.dequantize(layer, threads or torch.get_num_threads(), out=_scratch(layer))  # (N, K)
    return _matmul(layer, x, w, with_bias)


def _cdequant_1t(layer: nn.Module, x: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
    # The dequantization on one thread (the GEMM keeps torch's threads): one parallel region per call instead
    # of two, which matters where a second core is not always free.
    return _cdequant(layer, x, with_bias, threads=1)


def _with_bias(layer: nn.Module, y: torch.Tensor, with_bias: bool) -> torch.Tensor:
    return y + layer.bias.float() if with_bias and layer.bias is not None else y


def _fused(layer: nn.Module, x: torch.Tensor, with_bias: bool = False, threads: int = 0) -> torch.Tensor:
    inside = with_bias and layer.bias is not None and layer.bias.dtype == torch.float32  # else added after
    y = native.gemv(layer, x, threads or torch.get_num_threads(), inside)  # (M, N)
    return y if inside else _with_bias(layer, y, with_bias)


def _fused_1t(layer: nn.Module, x: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
    # One thread: on a loaded machine an OpenMP team waits for its slowest member, and at small shapes one
    # core already saturates the memory bandwidth a decode step needs. Measured against the team version.
    return _fused(layer, x, with_bias, threads=1)


def _torch_int8(layer: nn.Module, x: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
    cached = layer.__dict__.get("_hfx_int8pack")
    if cached is None:
        w8 = (layer.codes().to(torch.int16) - 128).to(torch.int8).contiguous()  # (N, K): q - 128 fits int8
        s = layer.scales.float().reshape(-1).expand(layer.out_features).contiguous()  # (N,)
        shift = (s * (128.0 - layer.zero_points().float().reshape(-1))).expand(layer.out_features)  # (N,)
        cached = (w8, s, shift.contiguous())
        layer.__dict__["_hfx_int8pack"] = cached
    w8, s, shift = cached
    y = torch._weight_int8pack_mm(x, w8, s) + x.sum(-1, keepdim=True) * shift  # (M, N)
    return _with_bias(layer, y, with_bias)


def _torch_int4(layer: nn.Module, x: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
    cached = layer.__dict__.get("_hfx_int4pack")
    if cached is None:
        packed = torch._convert_weight_to_int4pack_for_cpu(layer.codes().to(torch.int32), 1)
        s = layer.scales.float()  # (N, G)
        z = layer.zero_points().float()  # (N, G)
        scale_and_zero = torch.stack([s.t(), ((8.0 - z) * s).t()], dim=-1).contiguous()  # (G, N, 2)
        cached = (packed, scale_and_zero)
        layer.__dict__["_hfx_int4pack"] = cached
    packed, scale_and_zero = cached
    y = torch._weight_int4pack_mm_for_cpu(x, packed, layer.group_size, scale_and_zero)  # (M, N)
    return _with_bias(layer, y, with_bias)


KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "dequant": _dequant, "cdequant": _cdequant, "cdequant_1t": _cdequant_1t, "fused": _fused, "fused_1t": _fused_1t,
    "torch_int8": _torch_int8, "torch_int4": _torch_int4,
}
_PREFILL = ("dequant", "cdequant", "cdequant_1t")  # the candidates for more than 64 tokens


def applicable(layer: nn.Module, m: int = 1) -> list[str]:
    """Names of the candidates that can compute ``layer`` (weight-only, on the CPU) at ``m`` tokens, ``dequant`` first."""
    names = ["dequant"]
    if layer.act_mode != "none" or layer.qweight.device.type != "cpu" or not layer.qweight.is_contiguous():
        return names
    K, bits, gs = layer.in_features, layer.bits, layer.group_size
    if (bits == 8 or (bits == 4 and K % 2 == 0 and (gs <= 0 or gs % 2 == 0))) and fused_library() is not None:
        many = torch.get_num_threads() > 1
        names += ["cdequant", "cdequant_1t", "fused", "fused_1t"] if many else ["cdequant", "fused"]
    if bits == 8 and gs <= 0 and hasattr(torch, "_weight_int8pack_mm"):
        names.append("torch_int8")
    if (bits == 4 and gs in (32, 64, 128, 256) and K % gs == 0 and layer.out_features % 16 == 0
            and hasattr(torch, "_weight_int4pack_mm_for_cpu")):
        names.append("torch_int4")
    if m > 64:
        # Long prompts: the GEMM dominates; the GEMV-style kernels and torch's int kernels took 1.3x-100x
        # fp32's time at 512 tokens here (benchmarks/results/quant_kernels.md), and measuring them costs seconds.
        names = [n for n in names if n in _PREFILL]
    return names


def _bucket(m: int) -> str:
    return "1" if m == 1 else "<=8" if m <= 8 else "<=64" if m <= 64 else ">64"


def _choices_file() -> Path:
    return native.cache_root() / "choices.json"


def _load_choices() -> dict[str, str]:
    global _choices
    if _choices is None:
        try:
            _choices = json.loads(_choices_file().read_text())
        except (OSError, ValueError):
            _choices = {}
    return _choices


def _save_choices(choices: dict[str, str]) -> None:
    path = _choices_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(choices, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs a measurement next time
        pass


def _time(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after a warm-up. The median, not the best: on a CPU shared with
    higher-priority work, a 2-thread call waits milliseconds for its second core most of the time while its
    best try looks fast, and the choice should follow the typical call (on an idle machine both agree)."""
    fn()  # warm-up: first calls build converted copies and pick torch's kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _choose_prefill(layer: nn.Module, names: list[str]) -> str:
    """``cdequant`` or ``cdequant_1t`` where the C W equals ``dequantize()`` bit for bit, else ``dequant``.

    The GEMM that follows is the same for all three, so only the dequantization is timed (C on torch's
    threads vs one thread: a few milliseconds), never the GEMM (seconds at 512 tokens on large layers).
    """
    if "cdequant" not in names:
        return "dequant"
    w, reference = native.dequantize(layer, torch.get_num_threads(), out=_scratch(layer)), layer.dequantize()
    if not torch.equal(w, reference):
        log.warning("hfx quant kernel 'cdequant' gives a different W from dequantize() (max |dW| %.3g) on a "
                    "%dx%d %d-bit layer; not used", (w - reference).abs().max().item(), layer.out_features,
                    layer.in_features, layer.bits)
        return "dequant"
    if "cdequant_1t" not in names:
        return "cdequant"
    timings = {n: _time(lambda t=t: native.dequantize(layer, t, out=w), 5)
               for n, t in (("cdequant", torch.get_num_threads()), ("cdequant_1t", 1))}
    return min(timings, key=timings.__getitem__)


@torch.no_grad()
def choose(layer: nn.Module, m: int, repeats: int = 7) -> str:
    """The fastest correct candidate for ``layer`` at ``m`` tokens, measured once per shape and machine.

    A candidate whose output on the probe differs from ``dequant``'s by more than float32 rounding
    (|Δ| > 1e-4 · (max|y| + 1)) is never chosen, and the difference is logged. Above 64 tokens see
    :func:`_choose_prefill` (no timing).
    """
    names = applicable(layer, m)
    if m > 64:
        return _choose_prefill(layer, names)
    if len(names) == 1:
        return names[0]
    g = {-1: "tensor", 0: "channel"}.get(layer.group_size, str(layer.group_size))
    lib = fused_library()
    build = "no C kernels" if lib is None else lib.hfx_build  # a new kernel source is measured again
    key = (f"{native.machine()}|{build}|{layer.bits}b|g{g}|{'sym' if layer.symmetric else 'asym'}|"
           f"{layer.out_features}x{layer.in_features}|m{_bucket(m)}")
    choices = _load_choices()
    if key in choices and choices[key] in names:
        return choices[key]
    x = torch.randn(m, layer.in_features)  # (m, K): m <= 64 here
    reference = _dequant(layer, x, True)
    tol = 1e-4 * (reference.abs().max().item() + 1.0)
    timings: dict[str, float] = {}
    for name in names:
        diff = (KERNELS[name](layer, x, True) - reference).abs().max().item()
        if not diff <= tol:
            log.warning("hfx quant kernel %r differs from the dequantized reference by %.3g on %s; not used",
                        name, diff, key)
            continue
        timings[name] = _time(lambda n=name: KERNELS[n](layer, x, True), repeats)
    best = min(timings, key=timings.__getitem__)
    log.info("hfx quant kernels for %s: %s -> %s", key, {k: f"{v * 1e3:.3f} ms" for k, v in timings.items()}, best)
    for name in names:  # free the converted copies of the kernels that lost
        if name != best:
            layer.__dict__.pop({"torch_int8": "_hfx_int8pack", "torch_int4": "_hfx_int4pack"}.get(name, ""), None)
    choices[key] = best
    _save_choices(choices)
    return best


def run_kernel(layer: nn.Module, x: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
    """y = x W^T (+ bias) for ``x`` (..., K) of any float dtype, by the chosen kernel; returns float32 (..., N)."""
    shape = x.shape
    x2 = x if len(shape) == 2 else x.reshape(-1, shape[-1])  # (M, K)
    if x2.dtype != torch.float32 or not x2.is_contiguous():
        x2 = x2.float().contiguous()
    chosen = layer.__dict__.get("_hfx_kernel")
    if chosen is None:
        chosen = layer.__dict__["_hfx_kernel"] = {}
    bucket = _bucket(x2.shape[0])
    name = chosen.get(bucket)
    if name is None:
        name = chosen[bucket] = choose(layer, x2.shape[0])
    y = KERNELS[name](layer, x2, with_bias)  # (M, N)
    return y if len(shape) == 2 else y.view(*shape[:-1], layer.out_features)


def prepare_kernels(model: nn.Module, tokens: Iterable[int] = (1, 512)) -> dict[str, dict[str, str]]:
    """Choose (measure where needed) the kernel of every ``QuantLinear`` in ``model`` at each token count.

    The named step that takes the measuring out of the first forward call: run it once after quantizing or
    loading, before timing or serving. Token counts map to the buckets 1, up to 8, up to 64 and more.

    Args:
        model: Any module; its weight-only ``QuantLinear`` layers on the CPU are prepared, others skipped.
        tokens: Token counts (rows of the flattened input) to prepare for: decoding is 1, a prompt its length.

    Returns:
        {module name: {bucket: kernel name}} for the layers prepared.
    """
    from hfx_plugins.quant.layer import QuantLinear  # layer.py imports this module

    report: dict[str, dict[str, str]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, QuantLinear) or len(applicable(module)) == 1:
            continue
        chosen = module.__dict__.setdefault("_hfx_kernel", {})
        for m in tokens:
            chosen[_bucket(m)] = choose(module, m)
        report[name] = dict(chosen)
    return report
