"""``lora``: low-rank adapters (LoRA, rsLoRA, DoRA, LoRA+) with peft parity, peft-format I/O and strict loading.

    model = hfx.apply(model, "lora", r=8, target_modules=["q_proj", "v_proj"])   # still a transformers model
    hfx.save(model, "out/adapter")            # peft's format: PeftModel.from_pretrained(base, "out/adapter")
    model = hfx.load(base, "out/adapter")     # hfx- or peft-saved adapters; a mismatch is an error

    from hfx_plugins.lora import disable_adapters, merge_and_unload, set_adapter
    with disable_adapters(model): ...         # the frozen base model, without a second copy

Lives in ``plugins/lora/`` (installed as ``hfx_plugins.lora``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.lora.config import LoraConfig, LoraRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".apply": ("add_adapter",),
    ".embedding": ("LoraEmbedding",),
    ".io": ("load_adapter",),
    ".layer": ("LoraLayer", "LoraLinear"),
    ".model": (
        "delete_adapter", "disable_adapters", "get_state", "merge_adapter", "merge_and_unload", "set_adapter",
        "unload", "unmerge_adapter",
    ),
    ".optim": ("loraplus_param_groups",),
    ".recipe": ("LoraRecipe",),
    ".trainable": ("parameter_counts",),
    ".weighted": ("add_weighted_adapter",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["LoraConfig", "LoraRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="lora", package=__name__, config_cls=LoraConfig, run_config_cls=LoraRunConfig,
                recipe="LoraRecipe", record_once=True,
                description="Low-rank adapters (LoRA, rsLoRA, DoRA, LoRA+) in peft's format, loaded strictly")
