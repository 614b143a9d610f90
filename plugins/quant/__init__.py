"""``quant``: post-training affine quantization to packed 8, 4, 3 or 2-bit weights, and float formats.

- :mod:`.affine` the quantizer (per tensor / channel / group, symmetric or with a zero point),
  :mod:`.clip` the per-group range search, :mod:`.packing` the bit packing, :mod:`.observers` activation
  observers, :mod:`.layer` the ``QuantLinear`` layer, :mod:`.formats` simulated fp16/bf16/fp8 casts;
- ``hfx.apply(model, "quant", bits=4, group_size=128)``, ``hfx.save`` / ``hfx.load`` (safetensors);
- ``hfx run plugin=quant``: the size / perplexity table on smollm2-135m beside bitsandbytes.
"""

from pathlib import Path

from hfx.registry import Plugin
from hfx_plugins.quant.apply import apply
from hfx_plugins.quant.checks import checks
from hfx_plugins.quant.config import QuantConfig
from hfx_plugins.quant.io import can_load, load, load_quantized, save
from hfx_plugins.quant.layer import QuantLinear
from hfx_plugins.quant.recipe import QuantRecipe

__all__ = ["QuantConfig", "QuantLinear", "QuantRecipe", "load_quantized", "plugin"]

plugin = Plugin(
    name="quant",
    description="Post-training quantization to packed int8/int4/int3/int2 weights (validated vs bitsandbytes)",
    config_cls=QuantConfig,
    apply=apply,
    apply_inputs=("calibration",),
    recipe=QuantRecipe,
    checks=checks,
    save=save,
    load=load,
    can_load=can_load,
    presets_dir=Path(__file__).parent / "configs",
)
