"""``hfx.apply(model, "lora", ...)``: add a LoRA adapter to a model and make it the active one."""

from __future__ import annotations

from torch import nn

from hfx_plugins.lora.config import LoraConfig
from hfx_plugins.lora.model import add_adapter

__all__ = ["apply"]


def apply(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Add adapter ``cfg.adapter_name`` to ``model`` (in place) and make it the active one; return ``model``.

    Several named adapters may live on one model: ``hfx.save`` writes them all in peft's layout (the plugin
    is ``record_once``, so the model's record holds one lora entry whatever the number of adapters).

    Raises:
        HfxError: no layer matches ``target_modules``, an adapter of that name exists, or a setting the
            matched layers cannot take (see :func:`hfx_plugins.lora.model.add_adapter`).
    """
    return add_adapter(model, cfg)
