"""``finetune``: full fine-tuning with a task-specific head, on encoders, decoders and encoder-decoders.

    model = hfx.apply(AutoModel.from_pretrained(p), "finetune", num_labels=3)   # hfx's head on a bare backbone
    hfx.save(model, "out")       # AutoModelForSequenceClassification.from_pretrained("out") loads it
    model = hfx.load(AutoModel.from_pretrained(p), "out")

- encoder (``minilm``): sequence classification with hfx's head (:mod:`.heads`), saved in transformers' layout;
- decoder (``smollm2-135m``): causal language modelling;
- encoder-decoder (``minilm2minilm``): sequence-to-sequence generation.

Lives in ``plugins/finetune/`` (installed as ``hfx_plugins.finetune``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.finetune.config import FinetuneConfig, FinetuneRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".heads": ("SequenceClassifier",),
    ".io": ("to_transformers",),
    ".losses": ("causal_lm_loss", "classification_loss", "seq2seq_loss"),
    ".recipe": ("FinetuneRecipe",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["FinetuneConfig", "FinetuneRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="finetune", package=__name__, config_cls=FinetuneConfig,
                run_config_cls=FinetuneRunConfig, recipe="FinetuneRecipe",
                description="Full fine-tuning with a task head: classification, causal LM or seq2seq")
