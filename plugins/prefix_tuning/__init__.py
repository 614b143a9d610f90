"""``prefix_tuning``: trained keys and values in front of every attention layer (Li & Liang 2021), peft's format.

    model = hfx.apply(model, "prefix_tuning", num_virtual_tokens=20)   # still a transformers model
    model.generate(**inputs)                  # the prefix is in every forward and every generate() step
    hfx.save(model, "out/prefix")             # peft's format: PeftModel.from_pretrained(base, "out/prefix")
    model = hfx.load(base, "out/prefix")      # hfx- or peft-saved; a prefix of other shapes is an error

Lives in ``plugins/prefix_tuning/`` (installed as ``hfx_plugins.prefix_tuning``); see its README.md. Importing
this package imports no torch: the public names below are loaded from their modules on first use.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.prefix_tuning.config import PrefixTuningConfig, PrefixTuningRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".apply": ("get_encoder",),
    ".cache": ("PrefixInjector", "layer_states"),
    ".encoder": ("PrefixEncoder",),
    ".recipe": ("PrefixTuningRecipe",),
    ".text_init": ("init_from_text",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["PrefixTuningConfig", "PrefixTuningRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="prefix_tuning", package=__name__, config_cls=PrefixTuningConfig,
                run_config_cls=PrefixTuningRunConfig, recipe="PrefixTuningRecipe",
                description="Prefix tuning (trained per-layer keys and values, optional MLP) in peft's "
                            "format, loaded strictly")
