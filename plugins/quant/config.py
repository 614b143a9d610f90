"""Config of the ``quant`` plugin.

:class:`QuantConfig` is what ``hfx.apply(model, "quant", ...)`` takes: the quantizer's fields (``bits``,
``group_size``, ``sym`` and ``damp_percent`` named as in transformers' ``GPTQConfig``; ``target_modules`` / ``exclude_modules`` as in peft).
:class:`QuantRunConfig` adds what only ``hfx run plugin=quant`` uses (the ``quant:`` section: the comparison
table, its evaluation text, the recipe's calibration text). No torch import: ``hfx plugins`` and every config
error stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hfx.errors import HfxError

__all__ = ["ACT_MODES", "METHODS", "SUPPORTED_BITS", "QuantConfig", "QuantRunConfig", "parse_table_entry"]

SUPPORTED_BITS = (2, 3, 4, 8)
"""Bit widths of the packed codes (3 bits are packed across byte boundaries)."""
METHODS = ("rtn", "gptq")
"""How codes are chosen: round to nearest (data-free) or GPTQ (calibrated)."""
ACT_MODES = ("none", "dynamic", "static")
"""Activation quantization of a ``QuantLinear``: none, per-token int8 on the fly, or a fixed observed range."""


def parse_table_entry(entry: str) -> tuple[int, int, str]:
    """``"bits:group_size"`` or ``"bits:group_size:method"`` -> (bits, group_size, method); method defaults to rtn.

    Raises:
        HfxError: the entry is not of that form, or names an unsupported bit width or method.
    """
    parts = str(entry).split(":")
    ok = len(parts) in (2, 3) and parts[0].isdigit() and int(parts[0]) in SUPPORTED_BITS
    ok = ok and parts[1].lstrip("-").isdigit() and int(parts[1]) >= -1 and (len(parts) == 2 or parts[2] in METHODS)
    if not ok:
        raise HfxError(f"quant.table entry {entry!r} is not bits:group_size[:method] with bits in 8/4/3/2 and "
                       f"method in {'/'.join(METHODS)}, e.g. 4:128 or 4:128:gptq")
    return int(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else "rtn"


@dataclass
class QuantConfig:
    """Post-training affine quantization of linear layers to packed 8, 4, 3 or 2-bit integers (what
    ``hfx.apply(model, "quant", ...)`` takes).

    Raises:
        HfxError: (on construction) an unsupported ``bits``, ``method`` or ``activations``, a ``group_size``
            below -1, a negative ``clip_steps``, ``damp_percent`` outside [0, 1), ``block_size`` < 1, or a
            ``target_modules`` that is neither "all-linear" nor a list of names.
    """

    bits: int = 4
    """Bits per weight: 8, 4, 3 or 2."""
    sym: bool = False
    """Symmetric (zero point fixed at 2^(bits-1), none stored) instead of asymmetric with a zero point Z
    (transformers' GPTQConfig name)."""
    group_size: int = 128
    """-1 = one scale per tensor, 0 = one per output channel, N > 0 = one per group of N input features.
    When N does not divide the input features, the last group of each row is shorter (no padding stored)."""
    clip_steps: int = 20
    """Candidates in the per-group clipping-range search (alpha from 1 down to 0.3), followed by a
    least-squares scale refit; 0 = plain min/max (absmax) ranges."""
    method: str = "rtn"
    """rtn: round each weight to the nearest code of its group (ranges from the clip search), data-free.
    gptq: GPTQ (Frantar et al. 2022, see gptq.py): rounds the weights one input column at a time and moves
    each rounding error onto the columns not yet rounded, weighted by calibration inputs; hfx.apply then needs
    calibration batches (``calibration=[input_ids, ...]``). Storage and speed are the same as rtn's."""
    damp_percent: float = 0.01
    """gptq: fraction of the mean of diag(H) added to H's diagonal before inverting it (the paper's 1%;
    transformers' GPTQConfig name, where the default is 0.1)."""
    block_size: int = 128
    """gptq: columns rounded between two lazy updates of the rest of the weight (the paper's B = 128); rounded
    down to a multiple of group_size (at least one group) so that a group never spans two blocks."""
    activations: str = "none"
    """none (weight-only) or dynamic (per-token int8 activations computed on the fly)."""
    target_modules: Any = "all-linear"
    """Which layers to quantize: "all-linear" (every nn.Linear / GPT-2 Conv1D except the output layer),
    or a list of module-name suffixes such as [q_proj, v_proj]."""
    exclude_modules: list[str] = field(default_factory=list)
    """Module-name suffixes never to quantize (e.g. [classifier])."""

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
        if self.method not in METHODS:
            raise HfxError(f"quant.method={self.method!r} is unknown; choose one of {', '.join(METHODS)}")
        if not 0 <= self.damp_percent < 1:
            raise HfxError(f"quant.damp_percent must be in [0, 1) (a fraction of the mean of diag(H)), got {self.damp_percent}")
        if self.block_size < 1:
            raise HfxError(f"quant.block_size must be >= 1 column, got {self.block_size}")


@dataclass
class QuantRunConfig(QuantConfig):
    """The ``quant:`` section of ``hfx run``: :class:`QuantConfig` plus the comparison table's settings.

    Raises:
        HfxError: (on construction) what :class:`QuantConfig` raises, a malformed ``table`` entry, or
            calibration/evaluation sizes below their minimum.
    """

    table: list[str] = field(default_factory=lambda: ["8:0", "4:128", "4:128:gptq", "3:64", "2:32"])
    """The hfx rows of the table as "bits:group_size" (round to nearest) or "bits:group_size:gptq" (asymmetric,
    clip search as configured; GPTQ calibrated on text disjoint from the evaluated text)."""
    reference_rows: bool = True
    """Add bitsandbytes int8, nf4 and fp4 rows measured the same way on the same layers."""
    eval_windows: int = 12
    """Perplexity windows of pydoc_data.topics tokens (12 of 512 tokens by default)."""
    eval_window: int = 512
    """Tokens per perplexity window (at most the model's maximum positions)."""
    embedding_model: str = "minilm"
    """Encoder whose sentence embeddings are compared with fp32 (600 pydoc sentences); "" = skip."""
    formats: bool = True
    """Print the float-format table and the error of casting the model's linear weights to each."""
    calibration_samples: int = 32
    """gptq: calibration windows of ``calibration_window`` tokens taken from pydoc_data.topics right after the
    evaluation windows (a decoder). hfx.apply uses the batches it is given instead."""
    calibration_window: int = 512
    """gptq: tokens per calibration window (a decoder)."""
    calibration_sentences: int = 512
    """gptq: pydoc sentences after the 600 evaluated ones that calibrate an encoder."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration_samples < 1 or self.calibration_window < 2 or self.calibration_sentences < 1:
            raise HfxError("quant.calibration_samples and calibration_sentences must be >= 1 and calibration_window "
                           f">= 2, got {self.calibration_samples}, {self.calibration_sentences}, {self.calibration_window}")
        for row in self.table:
            parse_table_entry(row)
        if self.eval_window < 2:
            raise HfxError(f"quant.eval_window must be at least 2 tokens, got {self.eval_window}")
        if self.eval_windows < 1:
            raise HfxError(f"quant.eval_windows must be at least 1, got {self.eval_windows}")
