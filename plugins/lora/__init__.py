"""``lora``: low-rank adapters (LoRA, rsLoRA, DoRA, LoRA+) with peft parity, peft-format I/O and strict loading.

    model = hfx.apply(model, "lora", r=8, target_modules=["q_proj", "v_proj"])   # still a transformers model
    hfx.save(model, "out/adapter")            # peft's format: PeftModel.from_pretrained(base, "out/adapter")
    model = hfx.load(base, "out/adapter")     # hfx- or peft-saved adapters; a mismatch is an error

    from hfx_plugins.lora import disable_adapters, merge_and_unload, set_adapter
    with disable_adapters(model): ...         # the frozen base model, without a second copy

Lives in ``plugins/lora/`` (installed as ``hfx_plugins.lora``); see its README.md.
"""

from pathlib import Path

from torch import nn

from hfx.registry import Plugin
from hfx_plugins.lora.checks import checks
from hfx_plugins.lora.config import LoraConfig
from hfx_plugins.lora.embedding import LoraEmbedding
from hfx_plugins.lora.io import can_load, load, load_adapter, save
from hfx_plugins.lora.layer import LoraLayer, LoraLinear
from hfx_plugins.lora.model import (
    add_adapter,
    delete_adapter,
    disable_adapters,
    get_state,
    merge_adapter,
    merge_and_unload,
    set_adapter,
    unload,
    unmerge_adapter,
)
from hfx_plugins.lora.optim import loraplus_param_groups
from hfx_plugins.lora.recipe import LoraRecipe
from hfx_plugins.lora.trainable import parameter_counts
from hfx_plugins.lora.weighted import add_weighted_adapter

__all__ = [
    "LoraConfig",
    "LoraEmbedding",
    "LoraLayer",
    "LoraLinear",
    "LoraRecipe",
    "add_adapter",
    "add_weighted_adapter",
    "delete_adapter",
    "disable_adapters",
    "get_state",
    "load_adapter",
    "loraplus_param_groups",
    "merge_adapter",
    "merge_and_unload",
    "parameter_counts",
    "plugin",
    "set_adapter",
    "unload",
    "unmerge_adapter",
]


def _apply(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """``hfx.apply(model, "lora", ...)``: add adapter ``cfg.adapter_name`` and make it the active one.

    hfx.apply records each call on the model; a second adapter must not make ``hfx.save`` run lora's saver
    twice (it writes every adapter at once), so the earlier record is dropped and hfx.apply adds this one.
    """
    from hfx.api import applied

    model = add_adapter(model, cfg)
    object.__setattr__(model, "hfx_plugins", [(n, c) for n, c in applied(model) if n != "lora"])
    return model


plugin = Plugin(
    name="lora",
    description="Low-rank adapters (LoRA, rsLoRA, DoRA, LoRA+) in peft's format, loaded strictly",
    config_cls=LoraConfig,
    apply=_apply,
    recipe=LoraRecipe,
    checks=checks,
    save=save,
    load=load,
    can_load=can_load,
    presets_dir=Path(__file__).parent / "configs",
)
