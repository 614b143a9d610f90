"""Config of the ``quant`` plugin (the ``quant:`` section of ``hfx run``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hfx.errors import HfxError
from hfx_plugins.quant.affine import SUPPORTED_BITS

__all__ = ["QuantConfig"]


@dataclass
class QuantConfig:
    """Post-training affine quantization of linear layers to packed 8, 4, 3 or 2-bit integers."""

    bits: int = 4
    """Bits per weight: 8, 4, 3 or 2."""
    symmetric: bool = False
    """Symmetric (zero point fixed at 2^(bits-1), none stored) instead of asymmetric with a zero point Z."""
    group_size: int = 128
    """-1 = one scale per tensor, 0 = one per output channel, N > 0 = one per group of N input features.
    When N does not divide the input features, the last group of each row is shorter (no padding stored)."""
    clip_steps: int = 20
    """Candidates in the per-group clipping-range search (alpha from 1 down to 0.3), followed by a
    least-squares scale refit; 0 = plain min/max (absmax) ranges."""
    activations: str = "none"
    """none (weight-only) or dynamic (per-token int8 activations computed on the fly)."""
    target_modules: Any = "all-linear"
    """Which layers to quantize: "all-linear" (every nn.Linear / GPT-2 Conv1D except the output layer),
    or a list of module-name suffixes such as [q_proj, v_proj]."""
    exclude_modules: list[str] = field(default_factory=list)
    """Module-name suffixes never to quantize (e.g. [classifier])."""
    # The fields below are read by `hfx run plugin=quant` only (the comparison table), not by hfx.apply.
    table: list[str] = field(default_factory=lambda: ["8:0", "4:128", "3:64", "2:32"])
    """Recipe: the hfx rows of the table as "bits:group_size" (asymmetric, clip search as configured)."""
    reference_rows: bool = True
    """Recipe: add bitsandbytes int8, nf4 and fp4 rows measured the same way on the same layers."""
    eval_windows: int = 12
    """Recipe: perplexity windows of pydoc_data.topics tokens (GUIDE's bitsandbytes figures use 12 of 512)."""
    eval_window: int = 512
    """Recipe: tokens per perplexity window (at most the model's maximum positions)."""
    embedding_model: str = "minilm"
    """Recipe: encoder whose sentence embeddings are compared with fp32 (600 pydoc sentences); "" = skip."""
    formats: bool = True
    """Recipe: print the float-format table and the error of casting the model's linear weights to each."""

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise HfxError(f"quant.bits={self.bits} is not supported; choose one of {', '.join(map(str, SUPPORTED_BITS))}")
        if self.group_size < -1:
            raise HfxError(f"quant.group_size={self.group_size} is invalid; use -1 (per tensor), 0 (per channel) "
                           "or a positive group size such as 64 or 128")
        if self.clip_steps < 0:
            raise HfxError(f"quant.clip_steps must be >= 0, got {self.clip_steps}")
        if self.activations not in ("none", "dynamic"):
            raise HfxError(f"quant.activations must be none or dynamic, got {self.activations!r}")
        t = self.target_modules
        if not (t == "all-linear" or (isinstance(t, (list, tuple)) and t and all(isinstance(x, str) for x in t))):
            raise HfxError(f"quant.target_modules must be 'all-linear' or a non-empty list of module names, got {t!r}")
        if not isinstance(t, str):
            self.target_modules = list(t)
        for row in self.table:
            b, _, g = str(row).partition(":")
            if not (b.isdigit() and int(b) in SUPPORTED_BITS and g.lstrip("-").isdigit() and int(g) >= -1):
                raise HfxError(f"quant.table entry {row!r} is not bits:group_size with bits in 8/4/3/2, e.g. 4:128")
        if self.eval_window < 2:
            raise HfxError(f"quant.eval_window must be at least 2 tokens, got {self.eval_window}")
        if self.eval_windows < 1:
            raise HfxError(f"quant.eval_windows must be at least 1, got {self.eval_windows}")
