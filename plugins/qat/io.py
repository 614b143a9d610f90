"""Saving a QAT model: it is converted to packed integers first and written in ``quant``'s format.

What is worth keeping after quantization-aware training is the quantized model, so :func:`save` converts a
copy (the model being trained is left as it is) and writes it with :func:`hfx_plugins.quant.io.save`, plus
``hfx_qat.json`` with the QAT config. :func:`load` gives back the packed model (not the fake-quantized one).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from torch import nn

from hfx.io import atomic_write_json
from hfx_plugins.qat.config import QatConfig
from hfx_plugins.qat.fake import convert
from hfx_plugins.quant import io as quant_io
from hfx_plugins.quant.config import QuantConfig

__all__ = ["MARKER", "as_quant_config", "can_load", "load", "save"]

MARKER = "hfx_qat.json"


def as_quant_config(cfg: QatConfig) -> QuantConfig:
    return QuantConfig(bits=cfg.bits, symmetric=cfg.symmetric, group_size=cfg.group_size, clip_steps=0,
                       target_modules=cfg.target_modules, exclude_modules=list(cfg.exclude_modules))


def save(model: nn.Module, path: Path, cfg: QatConfig | None = None) -> None:
    from hfx.api import applied

    cfg = cfg or next((c for name, c in applied(model) if name == "qat"), None) or QatConfig()
    packed = convert(copy.deepcopy(model))
    quant_io.save(packed, Path(path), as_quant_config(cfg))
    atomic_write_json(Path(path) / MARKER, dataclasses.asdict(cfg))


def can_load(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def load(model: nn.Module, path: Path) -> tuple[nn.Module, QatConfig]:
    model, _ = quant_io.load(model, Path(path))
    return model, QatConfig(**json.loads((Path(path) / MARKER).read_text()))
