"""Choosing the training precision by measuring the device (``train.mixed_precision``).

The values are accelerate's (``no``, ``bf16``, ``fp16``) plus ``auto``. Mixed precision here means what
accelerate means: the forward and backward run under autocast in the low-precision type while the master
weights, the optimizer state, LoRA's A and B and quantization scales stay float32.

``auto`` picks bf16 only where the device computes it natively:

- CUDA: ``torch.cuda.is_bf16_supported()``;
- CPU: a short probe times a square matmul in float32 and in bfloat16 (a few repetitions each, best of
  them; 384^3, under a second even where bf16 is emulated). bf16 is chosen when it is measured faster. CPUs with AVX-512 BF16 or AMX run bf16 matmuls two to
  three times faster than fp32; CPUs without them emulate bf16 and run it hundreds of times slower. The
  result is cached per machine (CPU model and torch version) under ``$HFX_CACHE/precision.json``, so the
  probe runs once.

fp16 on a CPU is refused (accelerate's CPU autocast does not run fp16 matmuls natively and needs no loss
scaling there); bf16 requested on a CPU without native bf16 runs, with a warning giving the measured slowdown.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from hfx.errors import HfxError
from hfx.io import cache_root

__all__ = ["PRECISIONS", "PrecisionChoice", "cpu_bf16_probe", "resolve_mixed_precision"]

PRECISIONS = ("no", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why.

    Attributes:
        requested: What the config asked for (``no``, ``bf16``, ``fp16`` or ``auto``).
        mode: What accelerate is given (``no``, ``bf16`` or ``fp16``).
        reason: One sentence for the run summary.
        warning: A sentence to print when the choice is slower than fp32 (empty otherwise).
    """

    requested: str
    mode: str
    reason: str
    warning: str = ""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` reports: what a probe or timing is valid for."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    return cache_root() / "precision.json"


def cpu_bf16_probe(size: int = 384, repeats: int = 3, use_cache: bool = True) -> dict[str, float | str]:
    """Time a (size x size) @ (size x size) matmul in float32 and bfloat16 on the CPU.

    Returns ``{"cpu", "torch", "fp32_s", "bf16_s", "bf16_over_fp32"}``: the best of ``repeats`` timings in
    seconds and their ratio (< 1 means bf16 is faster). Cached per CPU model and torch version.
    """
    import torch

    key = f"{cpu_name()} | torch {torch.__version__} | {torch.backends.cpu.get_cpu_capability()}"
    path = _cache_file()
    cached: dict[str, dict[str, float | str]] = {}
    if use_cache and path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}
        if key in cached:
            return cached[key]
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    timings: dict[str, float] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up: the first call pays one-off kernel selection
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            x @ y
            best = min(best, time.perf_counter() - start)
            if name == "bf16" and best > 3 * timings["fp32"]:
                break  # emulated bf16: one slow repetition settles it, the others would only cost time
        timings[name] = best
    result: dict[str, float | str] = {"cpu": cpu_name(), "torch": torch.__version__, "fp32_s": timings["fp32"],
                                      "bf16_s": timings["bf16"], "bf16_over_fp32": timings["bf16"] / timings["fp32"]}
    if use_cache:
        cached[key] = result
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cached, indent=1))
            os.replace(tmp, path)
        except OSError:  # a read-only cache only costs a probe next time
            pass
    return result


def resolve_mixed_precision(requested: str, device: str) -> PrecisionChoice:
    """Turn ``train.mixed_precision`` into what accelerate is given, measuring the device for ``auto``.

    Args:
        requested: ``no``, ``bf16``, ``fp16`` or ``auto``.
        device: ``cpu`` or ``cuda`` (the device accelerate will use).

    Raises:
        HfxError: an unknown value, or ``fp16`` on a CPU.
    """
    if requested not in PRECISIONS:
        raise HfxError(f"train.mixed_precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "no":
        return PrecisionChoice(requested, "no", "float32 as requested (train.mixed_precision=no)")
    if device == "cuda":
        import torch

        native = torch.cuda.is_bf16_supported()
        if requested == "auto":
            mode = "bf16" if native else "no"
            why = "this GPU computes bf16 natively" if native else "this GPU has no native bf16"
            return PrecisionChoice(requested, mode, f"auto chose {'bf16' if native else 'float32'}: {why}")
        return PrecisionChoice(requested, requested, f"{requested} as requested, on CUDA")
    if requested == "fp16":
        raise HfxError("train.mixed_precision=fp16 is not supported on the CPU (no native fp16 matmul there); "
                       "use bf16 on a CPU with AVX-512 BF16/AMX, auto to measure, or no")
    probe = cpu_bf16_probe()
    ratio = float(probe["bf16_over_fp32"])
    measured = f"a 384^3 matmul took {ratio:.2f}x the fp32 time in bf16 on this CPU ({probe['cpu']})"
    if requested == "auto":
        if ratio < 1.0:
            return PrecisionChoice(requested, "bf16", f"auto chose bf16: {measured}")
        return PrecisionChoice(requested, "no", f"auto chose float32: {measured}")
    warning = "" if ratio < 1.0 else (f"train.mixed_precision=bf16 on a CPU without native bf16: {measured}; "
                                      "training will be slower than float32 (use auto or no)")
    return PrecisionChoice(requested, "bf16", f"bf16 as requested: {measured}", warning)
