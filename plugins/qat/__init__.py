"""``qat``: quantization-aware training with fake quantization and a straight-through estimator.

``hfx.apply(model, "qat", bits=4, group_size=32)`` swaps linear layers for :class:`FakeQuantLinear`; train as
usual; :func:`convert` turns the result into ``quant``'s packed :class:`QuantLinear` layers with the same
outputs. ``hfx run plugin=qat`` shows QAT recovering what 4-bit and 2-bit PTQ lose on minilm sentiment.
"""

from pathlib import Path

from hfx.registry import Plugin
from hfx_plugins.qat.apply import apply
from hfx_plugins.qat.config import QatConfig
from hfx_plugins.qat.fake import FakeQuantLinear, convert
from hfx_plugins.qat.io import can_load, load, save
from hfx_plugins.qat.recipe import QatRecipe

__all__ = ["FakeQuantLinear", "QatConfig", "QatRecipe", "convert", "plugin"]

plugin = Plugin(
    name="qat",
    description="Quantization-aware training (fake quant + STE), converted to packed quant layers",
    config_cls=QatConfig,
    apply=apply,
    recipe=QatRecipe,
    save=save,
    load=load,
    can_load=can_load,
    presets_dir=Path(__file__).parent / "configs",
)
