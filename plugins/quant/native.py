"""hfx's C kernels (``csrc/gemv.c``): built with the system's C compiler on first use, called through ctypes.

The library is compiled once per machine and source into ``$HFX_CACHE/kernels`` (``-O3 -march=native``, so
AVX2/FMA where the CPU has them, and ``-fopenmp`` for a 2-thread split of the rows). Flags are tried in
order and the first set that compiles wins: without OpenMP the kernels run on one thread, without any
working compiler :func:`library` is None and :mod:`.kernels` keeps torch's paths, with one warning.

A layer's constants (code and scale pointers, shape, grouping) are packed once into a C struct kept beside
the layer (outside ``state_dict``), so a decode call passes five arguments. The struct is rebuilt whenever
the layer's codes, scales, zero points or bias are different tensors (``load_state_dict``, ``.to()``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hfx import io as hfx_io
from hfx.errors import HfxError
from hfx.precision import cpu_name

__all__ = ["cache_root", "dequantize", "gemv", "library", "machine"]

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).parent / "csrc" / "gemv.c"
_FLAG_SETS = (  # first that compiles wins; -march=native enables AVX2/FMA exactly where the CPU has them
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-march=native"],
    ["-O3"],
)
_lib: Any = None
_lib_tried = False


class _QLayer(ctypes.Structure):
    """Mirror of ``hfx_qlayer`` in csrc/gemv.c (pointers first, then ints: the same layout on both sides)."""

    _fields_ = [("codes", ctypes.c_void_p), ("s", ctypes.c_void_p), ("z", ctypes.c_void_p),
                ("bias", ctypes.c_void_p), ("bits", ctypes.c_int), ("N", ctypes.c_int), ("K", ctypes.c_int),
                ("row_stride", ctypes.c_int), ("G", ctypes.c_int), ("gs", ctypes.c_int)]


def cache_root() -> Path:
    """``$HFX_CACHE/kernels`` (default ``~/.cache/hfx/kernels``): the compiled library and the kernel choices."""
    return hfx_io.cache_root() / "kernels"


def machine() -> str:
    """CPU model, torch version and thread count: what a compiled library and a timing are valid for."""
    return f"{cpu_name()}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def _compile(cc: str) -> Path | None:
    source = _SOURCE.read_text()
    errors = []
    for flags in _FLAG_SETS:
        flags = [*flags, "-shared", "-fPIC"]
        key = hashlib.sha256((source + " ".join(flags) + machine()).encode()).hexdigest()[:16]
        target = cache_root() / f"gemv-{key}.so"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([cc, *flags, "-o", str(tmp), str(_SOURCE)], capture_output=True, text=True)
        if done.returncode == 0:
            os.replace(tmp, target)  # atomic: a concurrent process sees no library or the whole one
            if errors:  # e.g. no libgomp: the kernels run on one thread
                log.warning("hfx quant kernels: compiled with %s only (%s)", " ".join(flags[:-2]), errors[-1])
            return target
        errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    log.warning("hfx quant kernels: %s could not compile %s (%s); QuantLinear uses torch's dequantize-then-"
                "matmul", cc, _SOURCE.name, errors[-1])
    return None


def library() -> Any:
    """The compiled kernels (a ctypes library), built on first use; None where no C compiler works."""
    global _lib, _lib_tried
    if _lib_tried:
        return _lib
    _lib_tried = True
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        log.warning("hfx quant kernels: no C compiler (gcc/cc) found; QuantLinear uses torch's dequantize-then-"
                    "matmul (install gcc for the fused kernels)")
        return None
    target = _compile(cc)
    if target is None:
        return None
    lib = ctypes.CDLL(str(target))
    lib.hfx_build = target.stem  # gemv-<hash of source, flags and machine>: kernel choices are valid for this build
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    lib.hfx_quant_gemv.restype = None
    lib.hfx_quant_gemv.argtypes = [ptr, ptr, i32, ptr, i32]  # layer, x, M, y, threads
    lib.hfx_quant_dequantize.restype = None
    lib.hfx_quant_dequantize.argtypes = [ptr, i32, i32, ptr, i32]  # layer, n0, n1, w, threads
    _lib = lib
    return lib


def _need_library() -> Any:
    lib = library()
    if lib is None:
        raise HfxError("hfx's C quantization kernels are unavailable (no working C compiler, see the warning "
                       "above); use QuantLinear.dequantize(), or install gcc")
    return lib


def _struct(layer: nn.Module, with_bias: bool) -> ctypes.Structure:
    """The layer's ``hfx_qlayer`` (with or without its bias), rebuilt when one of its tensors was replaced."""
    buffers = layer._buffers  # direct: nn.Module.__getattr__ costs microseconds per call at decode
    codes, scales, zeros = buffers["qweight"], buffers["scales"], buffers.get("zeros")
    bias = layer._parameters.get("bias") if with_bias else None
    key = (codes.data_ptr(), scales.data_ptr(), 0 if zeros is None else zeros.data_ptr(),
           0 if bias is None else bias.data_ptr(), layer.bits)
    slot = "_hfx_native_b" if with_bias else "_hfx_native"
    cached = layer.__dict__.get(slot)
    if cached is not None and cached[0] == key:
        return cached[1]
    K, gs = layer.in_features, layer.group_size
    if layer.bits not in (8, 4) or (layer.bits == 4 and (K % 2 or (gs > 0 and gs % 2))) or not codes.is_contiguous():
        raise HfxError(f"hfx's C kernels take 8-bit codes, or 4-bit codes with an even row length and group size, "
                       f"contiguous on the CPU; this layer has {layer.bits} bits, {K} inputs, group_size={gs}: "
                       "use QuantLinear.dequantize()")
    s = layer.scales.float().contiguous()  # (rows, G)
    z = layer.zero_points().float().contiguous()  # (rows, G)
    b = None if bias is None else bias.detach().float().contiguous()  # (N,)
    st = _QLayer(layer.qweight.data_ptr(), s.data_ptr(), z.data_ptr(), 0 if b is None else b.data_ptr(),
                 layer.bits, layer.out_features, K, 0 if s.shape[0] == 1 else s.shape[1], s.shape[1],
                 K if gs <= 0 else gs)
    st._keep = (layer.qweight, s, z, b)  # the pointers stay valid as long as the struct lives
    layer.__dict__[slot] = (key, st)
    return st


def gemv(layer: nn.Module, x: torch.Tensor, threads: int, with_bias: bool = False) -> torch.Tensor:
    """x (M, K) float32 contiguous -> x W^T (+ bias) (M, N) float32 by the fused C kernel on ``threads`` threads.

    Raises:
        HfxError: no C kernels on this machine, or a layer they do not take (see :func:`_struct`).
    """
    if x.dim() != 2 or x.shape[1] != layer.in_features or x.dtype != torch.float32 or not x.is_contiguous():
        raise HfxError(f"x must be a contiguous float32 (M, {layer.in_features}) tensor, got {x.dtype} {tuple(x.shape)}")
    st = _struct(layer, with_bias)
    y = torch.empty(x.shape[0], layer.out_features)  # (M, N)
    (_lib or _need_library()).hfx_quant_gemv(ctypes.addressof(st), x.data_ptr(), x.shape[0], y.data_ptr(), threads)
    return y


def dequantize(layer: nn.Module, threads: int, rows: tuple[int, int] | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``rows`` (default all) of W = (q - Z) s as float32 (n, K), equal bit for bit to ``layer.dequantize()``.

    Args:
        layer: A ``QuantLinear`` with 8-bit or 4-bit codes on the CPU.
        threads: OpenMP threads splitting the rows (1: the calling thread only).
        rows: (first, end) output rows; default all.
        out: A contiguous float32 (n, K) tensor to write into (a reused buffer); default a new one.

    Raises:
        HfxError: no C kernels on this machine, a layer they do not take, or an ``out`` of the wrong shape/dtype.
    """
    n0, n1 = rows or (0, layer.out_features)
    if not 0 <= n0 <= n1 <= layer.out_features:
        raise HfxError(f"rows {rows} are outside the layer's {layer.out_features} output rows")
    w = torch.empty(n1 - n0, layer.in_features) if out is None else out  # (n, K)
    if w.shape != (n1 - n0, layer.in_features) or w.dtype != torch.float32 or not w.is_contiguous():
        raise HfxError(f"out must be a contiguous float32 tensor of shape {(n1 - n0, layer.in_features)}, got "
                       f"{w.dtype} {tuple(w.shape)}")
    (_lib or _need_library()).hfx_quant_dequantize(ctypes.addressof(_struct(layer, False)), n0, n1, w.data_ptr(), threads)
    return w
