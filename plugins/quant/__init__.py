"""``quant``: post-training affine quantization to packed 8, 4, 3 or 2-bit weights (RTN or GPTQ), and float formats.

    model = hfx.apply(model, "quant", bits=4, group_size=128)            # nn.Linear / Conv1D -> QuantLinear
    model = hfx.apply(model, "quant", method="gptq", calibration=batches) # GPTQ, calibrated on input_ids
    hfx.save(model, "out/int4")                                          # safetensors, packed codes
    model = hfx_plugins.quant.load_quantized("out/int4")                 # built on the meta device

- :mod:`.affine` the quantizer (per tensor / channel / group, symmetric or with a zero point),
  :mod:`.clip` the per-group range search, :mod:`.packing` the bit packing, :mod:`.observers` activation
  observers, :mod:`.layer` the ``QuantLinear`` layer, :mod:`.gptq` GPTQ, :mod:`.formats` simulated
  fp16/bf16/fp8 casts;
- ``hfx run plugin=quant``: the size / perplexity table on smollm2-135m beside bitsandbytes;
- ``plugin=[quant,lora]``: QLoRA; ``QuantLinear`` implements ``hfx.protocols.FoldableBase``, through which the
  lora plugin merges adapters into the packed weights.

Lives in ``plugins/quant/`` (installed as ``hfx_plugins.quant``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.quant.config import ACT_MODES, METHODS, SUPPORTED_BITS, QuantConfig, QuantRunConfig

_EXPORTS = {
    "Observer": "hfx_plugins.quant.observers",
    "QuantLinear": "hfx_plugins.quant.layer",
    "QuantRecipe": "hfx_plugins.quant.recipe",
    "check_bits": "hfx_plugins.quant.affine",
    "check_not_quantized": "hfx_plugins.quant.apply",
    "choose_qparams": "hfx_plugins.quant.affine",
    "dequantize": "hfx_plugins.quant.affine",
    "dynamic_int8": "hfx_plugins.quant.layer",
    "fake_quantize": "hfx_plugins.quant.affine",
    "group_ranges": "hfx_plugins.quant.affine",
    "load_quantized": "hfx_plugins.quant.io",
    "make_observer": "hfx_plugins.quant.observers",
    "markdown_table": "hfx_plugins.quant.tables",
    "n_groups": "hfx_plugins.quant.affine",
    "prepare_kernels": "hfx_plugins.quant.kernels",
    "print_table": "hfx_plugins.quant.tables",
    "quantize": "hfx_plugins.quant.affine",
    "quantized_layers": "hfx_plugins.quant.apply",
    "select_linear": "hfx_plugins.quant.apply",
    "storage_summary": "hfx_plugins.quant.apply",
    "to_groups": "hfx_plugins.quant.affine",
    "ungroup": "hfx_plugins.quant.affine",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ACT_MODES",
    "METHODS",
    "SUPPORTED_BITS",
    "Observer",
    "QuantConfig",
    "QuantLinear",
    "QuantRecipe",
    "QuantRunConfig",
    "check_bits",
    "check_not_quantized",
    "choose_qparams",
    "dequantize",
    "dynamic_int8",
    "fake_quantize",
    "group_ranges",
    "load_quantized",
    "make_observer",
    "markdown_table",
    "n_groups",
    "plugin",
    "prepare_kernels",
    "print_table",
    "quantize",
    "quantized_layers",
    "select_linear",
    "storage_summary",
    "to_groups",
    "ungroup",
]

plugin = Plugin(
    name="quant",
    description="Post-training quantization to packed int8/int4/int3/int2 weights (validated vs bitsandbytes)",
    config_cls=QuantConfig,
    run_config_cls=QuantRunConfig,
    apply=lazy("hfx_plugins.quant.apply:apply"),
    apply_inputs=("calibration",),
    recipe=lazy("hfx_plugins.quant.recipe:QuantRecipe"),
    checks=lazy("hfx_plugins.quant.checks:checks"),
    save=lazy("hfx_plugins.quant.io:save"),
    load=lazy("hfx_plugins.quant.io:load"),
    can_load=lazy("hfx_plugins.quant.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
