"""``qat``: quantization-aware training with fake quantization and a straight-through estimator.

    model = hfx.apply(model, "qat", bits=4, group_size=32)   # nn.Linear / Conv1D -> FakeQuantLinear
    ...train as usual (transformers.Trainer works)...
    packed = hfx_plugins.qat.convert(model)                    # -> quant's packed QuantLinear, same outputs
    hfx.save(model, "out/qat4")                                # converts a copy; quant's safetensors format

``hfx run plugin=qat`` shows QAT recovering what 4-bit and 2-bit PTQ lose on minilm sentiment. Builds on
``quant`` (its packed layers and quantizer, through ``hfx_plugins.quant``'s public names) and, in the recipe,
on ``finetune``'s classification head (through ``hfx.apply``).

Lives in ``plugins/qat/`` (installed as ``hfx_plugins.qat``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.qat.config import QatConfig, QatRunConfig

_EXPORTS = {
    "FakeQuantLinear": "hfx_plugins.qat.fake",
    "QatRecipe": "hfx_plugins.qat.recipe",
    "as_quant_config": "hfx_plugins.qat.io",
    "convert": "hfx_plugins.qat.fake",
    "fake_quant_ste": "hfx_plugins.qat.fake",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FakeQuantLinear",
    "QatConfig",
    "QatRecipe",
    "QatRunConfig",
    "as_quant_config",
    "convert",
    "fake_quant_ste",
    "plugin",
]

plugin = Plugin(
    name="qat",
    description="Quantization-aware training (fake quant + STE), converted to packed quant layers",
    config_cls=QatConfig,
    run_config_cls=QatRunConfig,
    requires=("quant", "finetune"),
    apply=lazy("hfx_plugins.qat.apply:apply"),
    recipe=lazy("hfx_plugins.qat.recipe:QatRecipe"),
    save=lazy("hfx_plugins.qat.io:save"),
    load=lazy("hfx_plugins.qat.io:load"),
    can_load=lazy("hfx_plugins.qat.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
