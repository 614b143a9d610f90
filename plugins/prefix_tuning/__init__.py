"""``prefix_tuning``: trained keys and values in front of every attention layer (Li & Liang 2021), peft's format.

    model = hfx.apply(model, "prefix_tuning", num_virtual_tokens=20)   # still a transformers model
    model.generate(**inputs)                  # the prefix is in every forward and every generate() step
    hfx.save(model, "out/prefix")             # peft's format: PeftModel.from_pretrained(base, "out/prefix")
    model = hfx.load(base, "out/prefix")      # hfx- or peft-saved; a prefix of other shapes is an error

Lives in ``plugins/prefix_tuning/`` (installed as ``hfx_plugins.prefix_tuning``); see its README.md. Importing
this package imports no torch: the public names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.prefix_tuning.config import PrefixTuningConfig, PrefixTuningRunConfig

_EXPORTS = {
    "PrefixEncoder": "hfx_plugins.prefix_tuning.encoder",
    "PrefixInjector": "hfx_plugins.prefix_tuning.cache",
    "PrefixTuningRecipe": "hfx_plugins.prefix_tuning.recipe",
    "get_encoder": "hfx_plugins.prefix_tuning.apply",
    "layer_states": "hfx_plugins.prefix_tuning.cache",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["PrefixEncoder", "PrefixInjector", "PrefixTuningConfig", "PrefixTuningRecipe", "PrefixTuningRunConfig",
           "get_encoder", "layer_states", "plugin"]

plugin = Plugin(
    name="prefix_tuning",
    description="Prefix tuning (trained per-layer keys and values, optional MLP) in peft's format, loaded strictly",
    config_cls=PrefixTuningConfig,
    run_config_cls=PrefixTuningRunConfig,
    apply=lazy("hfx_plugins.prefix_tuning.apply:apply"),
    recipe=lazy("hfx_plugins.prefix_tuning.recipe:PrefixTuningRecipe"),
    checks=lazy("hfx_plugins.prefix_tuning.checks:checks"),
    save=lazy("hfx_plugins.prefix_tuning.io:save"),
    load=lazy("hfx_plugins.prefix_tuning.io:load"),
    can_load=lazy("hfx_plugins.prefix_tuning.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
