"""Fast paths for ``QuantLinear`` at inference, chosen by measuring once per shape and machine.

The packed codes, fp16 scales and uint8 zero points of a :class:`~hfx_plugins.quant.layer.QuantLinear` stay the
single source of truth (in memory, in ``state_dict`` and on disk); a kernel may keep a converted copy beside
them, outside ``state_dict``. Candidates, each a function ``(layer, x (M, K) fp32) -> y (M, N) fp32``:

- ``dequant``: W = (q - Z) * s, then torch's fp32 matmul. The reference every other path is checked against,
  and the fastest at many tokens (prefill), where the matmul dominates the dequantization.
- ``fused`` / ``fused_1t``: hfx's C kernel (``csrc/gemv.c``, compiled with the system's C compiler on first
  use) on torch's thread count / on one thread: the codes are turned into floats in registers, never written
  out. A decode step is memory-bound, and int8/int4 read 4x/8x fewer bytes than fp32 (llama.cpp's Q8_0/Q4
  GEMV rest on the same fact). 8 and 4 bits.
- ``torch_int8``: torch's ``_weight_int8pack_mm`` (8 bits, one scale per output channel), with the zero
  point folded in as s (128 - Z) sum(x).
- ``torch_int4``: torch's ``_weight_int4pack_mm_for_cpu`` (4 bits, groups of 32/64/128/256 dividing K), whose
  weight is (q - 8) s + z': ours maps with z' = (8 - Z) s.

:func:`choose` times every candidate that applies on the layer's own weights at the call's token-count
bucket (1, up to 8, up to 64; more tokens always take ``dequant``), skips any whose output differs from ``dequant`` on that probe (logged),
and remembers the fastest per machine in ``$HFX_CACHE/kernels/choices.json``. Training (inputs that need a
gradient) always takes ``dequant``, the only path with a backward.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["KERNELS", "applicable", "choose", "fused_library", "run_kernel"]

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).parent / "csrc" / "gemv.c"
_lib: Any = None
_lib_tried = False
_choices: dict[str, str] | None = None


def _cache_root() -> Path:
    return Path(os.environ.get("HFX_CACHE", Path.home() / ".cache" / "hfx")) / "kernels"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def fused_library() -> Any:
    """The compiled C kernel (ctypes), built once per machine and source; None where no C compiler works."""
    global _lib, _lib_tried
    if _lib_tried:
        return _lib
    _lib_tried = True
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        log.info("hfx quant kernels: no C compiler found; the fused path is unavailable")
        return None
    flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    key = hashlib.sha256((_SOURCE.read_text() + " ".join(flags) + _machine()).encode()).hexdigest()[:16]
    target = _cache_root() / f"gemv-{key}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([cc, *flags, "-o", str(tmp), str(_SOURCE)], capture_output=True, text=True)
        if done.returncode != 0:
            log.info("hfx quant kernels: compiling %s failed: %s", _SOURCE.name, done.stderr.strip()[:300])
            return None
        os.replace(tmp, target)  # atomic: a concurrent process sees the old state or the whole library
    lib = ctypes.CDLL(str(target))
    lib.hfx_quant_gemv.restype = None
    lib.hfx_quant_gemv.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                   ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    _lib = lib
    return lib


# ---------------------------------------------------------------------------------------------------------
# Candidates: (layer, x (M, K) float32 contiguous) -> y (M, N) float32, bias not added
# ---------------------------------------------------------------------------------------------------------

def _dequant(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.dequantize().t()  # (M, K) @ (K, N)


def _float_qparams(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 copies of the scales and zero points, (rows, G) each, kept outside state_dict."""
    cached = layer.__dict__.get("_hfx_fp32_qparams")
    if cached is None or cached[0].shape != layer.scales.shape:
        cached = (layer.scales.float().contiguous(), layer.zero_points().float().contiguous())
        layer.__dict__["_hfx_fp32_qparams"] = cached
    return cached


def _fused(layer: nn.Module, x: torch.Tensor, threads: int = 0) -> torch.Tensor:
    lib = fused_library()
    M, K = x.shape
    N, gs = layer.out_features, layer.group_size
    s, z = _float_qparams(layer)  # (rows, G)
    G = s.shape[1]
    group = K if gs <= 0 else gs
    xsum = torch.empty(M, G)
    y = torch.empty(M, N)
    lib.hfx_quant_gemv(x.data_ptr(), M, K, layer.qweight.data_ptr(), layer.bits, N, s.data_ptr(), z.data_ptr(),
                       0 if s.shape[0] == 1 else G, G, group, xsum.data_ptr(), y.data_ptr(), threads or torch.get_num_threads())
    return y


def _fused_1t(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # One thread: on a loaded machine an OpenMP team waits for its slowest member, and at small shapes one
    # core already saturates the memory bandwidth a decode step needs. Measured against the team version.
    return _fused(layer, x, threads=1)


def _torch_int8(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    cached = layer.__dict__.get("_hfx_int8pack")
    if cached is None:
        w8 = (layer.codes().to(torch.int16) - 128).to(torch.int8).contiguous()  # (N, K): q - 128 fits int8
        s = layer.scales.float().reshape(-1).expand(layer.out_features).contiguous()  # (N,)
        shift = (s * (128.0 - layer.zero_points().float().reshape(-1))).expand(layer.out_features)  # (N,)
        cached = (w8, s, shift.contiguous())
        layer.__dict__["_hfx_int8pack"] = cached
    w8, s, shift = cached
    return torch._weight_int8pack_mm(x, w8, s) + x.sum(-1, keepdim=True) * shift  # (M, N)


def _torch_int4(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    cached = layer.__dict__.get("_hfx_int4pack")
    if cached is None:
        packed = torch._convert_weight_to_int4pack_for_cpu(layer.codes().to(torch.int32), 1)
        s, z = _float_qparams(layer)  # (N, G)
        scale_and_zero = torch.stack([s.t(), ((8.0 - z) * s).t()], dim=-1).contiguous()  # (G, N, 2)
        cached = (packed, scale_and_zero)
        layer.__dict__["_hfx_int4pack"] = cached
    packed, scale_and_zero = cached
    return torch._weight_int4pack_mm_for_cpu(x, packed, layer.group_size, scale_and_zero)


KERNELS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "dequant": _dequant, "fused": _fused, "fused_1t": _fused_1t, "torch_int8": _torch_int8, "torch_int4": _torch_int4,
}


def applicable(layer: nn.Module) -> list[str]:
    """Names of the candidates that can compute ``layer`` (weight-only, on the CPU), ``dequant`` first."""
    names = ["dequant"]
    if layer.act_mode != "none" or layer.qweight.device.type != "cpu":
        return names
    K, bits, gs = layer.in_features, layer.bits, layer.group_size
    if bits == 8 or (bits == 4 and K % 2 == 0 and (gs <= 0 or gs % 2 == 0)):
        if fused_library() is not None:
            names += ["fused", "fused_1t"] if torch.get_num_threads() > 1 else ["fused"]
    if bits == 8 and gs <= 0 and hasattr(torch, "_weight_int8pack_mm"):
        names.append("torch_int8")
    if (bits == 4 and gs in (32, 64, 128, 256) and K % gs == 0 and layer.out_features % 16 == 0
            and hasattr(torch, "_weight_int4pack_mm_for_cpu")):
        names.append("torch_int4")
    return names


def _bucket(m: int) -> str:
    return "1" if m == 1 else "<=8" if m <= 8 else "<=64" if m <= 64 else ">64"


def _choices_file() -> Path:
    return _cache_root() / "choices.json"


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
    fn()  # warm-up: first calls build converted copies and pick torch's kernels
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def choose(layer: nn.Module, m: int, repeats: int = 5) -> str:
    """The fastest correct candidate for ``layer`` at ``m`` tokens, measured once per shape and machine.

    A candidate whose output on the probe differs from ``dequant``'s by more than float32 rounding
    (|Δ| > 1e-4 · (max|y| + 1)) is never chosen, and the difference is logged.
    """
    names = applicable(layer)
    if m > 64:
        # Long prompts: the matmul dominates and torch's fp32 GEMM wins; the GEMV-style kernels took 1.3x-80x
        # its time at 512 tokens here (benchmarks/results/quant_kernels.md), and measuring them costs seconds.
        names = ["dequant"]
    if len(names) == 1:
        return names[0]
    g = {-1: "tensor", 0: "channel"}.get(layer.group_size, str(layer.group_size))
    key = (f"{_machine()}|{layer.bits}b|g{g}|{'sym' if layer.symmetric else 'asym'}|{layer.out_features}x"
           f"{layer.in_features}|m{_bucket(m)}")
    choices = _load_choices()
    if key in choices and choices[key] in names:
        return choices[key]
    x = torch.randn(min(m, 512), layer.in_features)
    reference = _dequant(layer, x)
    tol = 1e-4 * (reference.abs().max().item() + 1.0)
    timings: dict[str, float] = {}
    for name in names:
        diff = (KERNELS[name](layer, x) - reference).abs().max().item()
        if not diff <= tol:
            log.warning("hfx quant kernel %r differs from the dequantized reference by %.3g on %s; not used",
                        name, diff, key)
            continue
        timings[name] = _time(lambda n=name: KERNELS[n](layer, x), repeats)
    best = min(timings, key=timings.__getitem__)
    log.info("hfx quant kernels for %s: %s -> %s", key, {k: f"{v * 1e3:.3f} ms" for k, v in timings.items()}, best)
    for name in names:  # free the converted copies of the kernels that lost
        if name != best:
            layer.__dict__.pop({"torch_int8": "_hfx_int8pack", "torch_int4": "_hfx_int4pack"}.get(name, ""), None)
    choices[key] = best
    _save_choices(choices)
    return best


def run_kernel(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """y = x W^T (no bias) for ``x`` (..., K) of any float dtype, by the chosen kernel; returns float32 (..., N)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).float().contiguous()  # (M, K)
    name = layer.__dict__.setdefault("_hfx_kernel", {}).get(_bucket(x2.shape[0]))
    if name is None:
        name = choose(layer, x2.shape[0])
        layer.__dict__["_hfx_kernel"][_bucket(x2.shape[0])] = name
    return KERNELS[name](layer, x2).view(*shape[:-1], layer.out_features)
