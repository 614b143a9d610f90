"""Config of the ``qat`` plugin.

:class:`QatConfig` is what ``hfx.apply(model, "qat", ...)`` takes: the fake quantizer's fields, named as the
``quant`` plugin names the same settings (``bits``, ``group_size``, ``sym``) so that ``convert`` gives
exactly those packed layers. :class:`QatRunConfig` adds what only ``hfx run plugin=qat`` uses (the PTQ vs QAT
comparison). No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hfx.errors import HfxError
from hfx_plugins.quant import SUPPORTED_BITS

__all__ = ["ACT_OBSERVERS", "QatConfig", "QatRunConfig"]

ACT_OBSERVERS = ("dynamic", "minmax", "moving_average", "percentile")


@dataclass
class QatConfig:
    """Quantization-aware training: fake-quantized weights (and activations), full-precision master weights
    (what ``hfx.apply(model, "qat", ...)`` takes).

    Raises:
        HfxError: (on construction) an unsupported ``bits`` or ``act_bits``, a ``group_size`` below -1, an
            unknown ``act_observer``, or a ``target_modules`` that is neither "all-linear" nor a list of names.
    """

    bits: int = 4
    """Bits per weight in the fake-quantized forward and after convert: 8, 4, 3 or 2."""
    group_size: int = 32
    """-1 = per tensor, 0 = per output channel, N > 0 = groups of N input features (short last group allowed)."""
    sym: bool = False
    """Symmetric weights (zero point fixed at 2^(bits-1)) instead of a zero point per group."""
    act_bits: int = 0
    """0 = weights only; 8 = also fake-quantize the inputs of every quantized layer to int8."""
    act_observer: str = "dynamic"
    """With act_bits=8: dynamic (per-token absmax, computed on the fly) or a static range from an observer:
    minmax, moving_average or percentile (updated in training mode, frozen in eval mode and by convert)."""
    target_modules: Any = "all-linear"
    """"all-linear" (every nn.Linear / Conv1D except the output layer) or a list of module-name suffixes."""
    exclude_modules: list[str] = field(default_factory=lambda: ["classifier", "score"])
    """Module-name suffixes kept in full precision (by default the small task heads)."""

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise HfxError(f"qat.bits={self.bits} is not supported; choose from {', '.join(map(str, SUPPORTED_BITS))}")
        if self.group_size < -1:
            raise HfxError(f"qat.group_size={self.group_size} is invalid; use -1, 0 or a positive group size")
        if self.act_bits not in (0, 8):
            raise HfxError(f"qat.act_bits must be 0 (weights only) or 8, got {self.act_bits}")
        if self.act_observer not in ACT_OBSERVERS:
            raise HfxError(f"qat.act_observer must be one of {', '.join(ACT_OBSERVERS)}, got {self.act_observer!r}")
        t = self.target_modules
        if not (t == "all-linear" or (isinstance(t, (list, tuple)) and t and all(isinstance(x, str) for x in t))):
            raise HfxError(f"qat.target_modules must be 'all-linear' or a non-empty list of module names, got {t!r}")
        if not isinstance(t, str):
            self.target_modules = list(t)


@dataclass
class QatRunConfig(QatConfig):
    """The ``qat:`` section of ``hfx run``: :class:`QatConfig` plus the PTQ vs QAT comparison's settings.

    Raises:
        HfxError: (on construction) what :class:`QatConfig` raises, an unsupported bit width in
            ``compare_bits``, or ``qat_steps`` < 1.
    """

    compare_bits: list[int] = field(default_factory=lambda: [4, 2])
    """Bit widths for which PTQ and QAT are compared in the table."""
    qat_steps: int = 60
    """Optimizer steps of QAT after the fp32 fine-tuning (train.max_steps); fp32 gets the same extra steps as a
    control, so the extra training is not credited to QAT."""
    qat_learning_rate: float = 2e-5
    """Learning rate of the QAT steps (and of the fp32 control steps)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for bits in self.compare_bits:
            if bits not in SUPPORTED_BITS:
                raise HfxError(f"qat.compare_bits={bits} is not supported; choose from {', '.join(map(str, SUPPORTED_BITS))}")
        if self.qat_steps < 1:
            raise HfxError(f"qat.qat_steps must be at least 1, got {self.qat_steps}")
