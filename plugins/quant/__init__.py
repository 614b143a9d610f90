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

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.quant.config import ACT_MODES, METHODS, SUPPORTED_BITS, QuantConfig, QuantRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".affine": (
        "affine_codes", "check_bits", "choose_qparams", "code_range", "dequantize", "fake_quantize",
        "fake_quantize_mask", "group_ranges", "n_groups", "quantize", "to_groups", "ungroup",
    ),
    ".apply": ("check_not_quantized", "quantized_layers", "select_linear", "storage_summary"),
    ".io": ("load_quantized",),
    ".kernels": ("prepare_kernels",),
    ".layer": ("QuantLinear", "dynamic_int8"),
    ".observers": ("Observer", "make_observer"),
    ".recipe": ("QuantRecipe",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["ACT_MODES", "METHODS", "SUPPORTED_BITS", "QuantConfig", "QuantRunConfig", "plugin",
           *export_names(_EXPORTS)]

plugin = Plugin(name="quant", package=__name__, config_cls=QuantConfig, run_config_cls=QuantRunConfig,
                recipe="QuantRecipe", apply_inputs=("calibration",),
                description="Post-training quantization to packed int8/int4/int3/int2 weights (validated vs "
                            "bitsandbytes)")
