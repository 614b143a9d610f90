"""Saving a QAT model: it is converted to packed integers first and written in ``quant``'s format.

What is worth keeping after quantization-aware training is the quantized model, so :func:`save` converts a
copy (the model being trained is left as it is) and has the ``quant`` plugin write it (its safetensors
format, through ``hfx.registry``), plus ``hfx_qat.json`` with the QAT config. :func:`load` gives back the
packed model (not the fake-quantized one).
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from hfx import registry
from hfx.io import config_marker, has_config_marker, read_config_marker, write_config_marker
from hfx.protocols import config_of, forget, record
from hfx_plugins.qat.config import QatConfig
from hfx_plugins.qat.fake import convert
from hfx_plugins.quant import QuantConfig

__all__ = ["MARKER", "as_quant_config", "can_load", "load", "save", "save_packed"]

MARKER = config_marker("qat")


def as_quant_config(cfg: QatConfig) -> QuantConfig:
    """The ``quant`` config describing what :func:`convert` makes of ``cfg``'s layers (min/max ranges: clip_steps 0)."""
    return QuantConfig(bits=cfg.bits, sym=cfg.sym, group_size=cfg.group_size, clip_steps=0,
                       target_modules=cfg.target_modules, exclude_modules=list(cfg.exclude_modules))


def save_packed(packed: nn.Module, path: Path, cfg: QatConfig) -> None:
    """Write a converted (packed) model with the ``quant`` plugin's saver, recorded as ``quant`` with ``cfg``'s layout.

    Raises:
        HfxError: what ``quant``'s save raises (e.g. no packed layer).
    """
    forget(packed, "qat")
    forget(packed, "quant")
    record(packed, "quant", as_quant_config(cfg))
    registry.get("quant").save(packed, Path(path))


def save(model: nn.Module, path: Path, cfg: QatConfig | None = None) -> None:
    """Convert a copy of ``model`` to packed layers and write it in ``quant``'s format, with ``hfx_qat.json``.

    Raises:
        HfxError: the model has no fake-quantized (or packed) layer to write.
    """
    cfg = cfg or config_of(model, "qat") or QatConfig()
    save_packed(convert(copy.deepcopy(model)), Path(path), cfg)
    write_config_marker(path, "qat", cfg, QatConfig)  # not a run's extra fields


def can_load(path: Path) -> bool:
    """Whether ``path`` was written by :func:`save` (it holds ``hfx_qat.json``)."""
    return has_config_marker(path, "qat")


def load(model: nn.Module, path: Path) -> tuple[nn.Module, QatConfig]:
    """Load the packed model written by :func:`save` onto the full-precision base ``model``.

    Raises:
        HfxError: what ``quant``'s load raises (a model that does not fit the saved layers).
    """
    model, _ = registry.get("quant").load(model, Path(path))
    # folders from before the run-only fields moved out (extra keys dropped) and their key "symmetric"
    cfg, _ = read_config_marker(path, "qat", QatConfig, renamed={"symmetric": "sym"})
    return model, cfg
