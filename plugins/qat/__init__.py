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

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.qat.config import QatConfig, QatRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".fake": ("FakeQuantLinear", "convert", "fake_quant_ste"),
    ".io": ("as_quant_config",),
    ".recipe": ("QatRecipe",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["QatConfig", "QatRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="qat", package=__name__, config_cls=QatConfig, run_config_cls=QatRunConfig,
                recipe="QatRecipe", requires=("quant", "finetune"),
                description="Quantization-aware training (fake quant + STE), converted to packed quant "
                            "layers")
