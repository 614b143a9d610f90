"""``lora``: low-rank adapters (LoRA, rsLoRA, DoRA, LoRA+) with peft parity, peft-format I/O and strict loading.

    model = hfx.apply(model, "lora", r=8, target_modules=["q_proj", "v_proj"])   # still a transformers model
    hfx.save(model, "out/adapter")            # peft's format: PeftModel.from_pretrained(base, "out/adapter")
    model = hfx.load(base, "out/adapter")     # hfx- or peft-saved adapters; a mismatch is an error

    from hfx_plugins.lora import disable_adapters, merge_and_unload, set_adapter
    with disable_adapters(model): ...         # the frozen base model, without a second copy

Lives in ``plugins/lora/`` (installed as ``hfx_plugins.lora``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.lora.config import LoraConfig, LoraRunConfig

_EXPORTS = {
    "LoraEmbedding": "hfx_plugins.lora.embedding",
    "LoraLayer": "hfx_plugins.lora.layer",
    "LoraLinear": "hfx_plugins.lora.layer",
    "LoraRecipe": "hfx_plugins.lora.recipe",
    "add_adapter": "hfx_plugins.lora.model",
    "add_weighted_adapter": "hfx_plugins.lora.weighted",
    "delete_adapter": "hfx_plugins.lora.model",
    "disable_adapters": "hfx_plugins.lora.model",
    "get_state": "hfx_plugins.lora.model",
    "load_adapter": "hfx_plugins.lora.io",
    "loraplus_param_groups": "hfx_plugins.lora.optim",
    "merge_adapter": "hfx_plugins.lora.model",
    "merge_and_unload": "hfx_plugins.lora.model",
    "parameter_counts": "hfx_plugins.lora.trainable",
    "set_adapter": "hfx_plugins.lora.model",
    "unload": "hfx_plugins.lora.model",
    "unmerge_adapter": "hfx_plugins.lora.model",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "LoraConfig",
    "LoraEmbedding",
    "LoraLayer",
    "LoraLinear",
    "LoraRecipe",
    "LoraRunConfig",
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

plugin = Plugin(
    name="lora",
    description="Low-rank adapters (LoRA, rsLoRA, DoRA, LoRA+) in peft's format, loaded strictly",
    config_cls=LoraConfig,
    run_config_cls=LoraRunConfig,
    record_once=True,
    apply=lazy("hfx_plugins.lora.apply:apply"),
    recipe=lazy("hfx_plugins.lora.recipe:LoraRecipe"),
    checks=lazy("hfx_plugins.lora.checks:checks"),
    save=lazy("hfx_plugins.lora.io:save"),
    load=lazy("hfx_plugins.lora.io:load"),
    can_load=lazy("hfx_plugins.lora.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
