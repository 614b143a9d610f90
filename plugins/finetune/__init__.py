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

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.finetune.config import FinetuneConfig, FinetuneRunConfig

_EXPORTS = {
    "FinetuneRecipe": "hfx_plugins.finetune.recipe",
    "SequenceClassifier": "hfx_plugins.finetune.heads",
    "causal_lm_loss": "hfx_plugins.finetune.losses",
    "classification_loss": "hfx_plugins.finetune.losses",
    "seq2seq_loss": "hfx_plugins.finetune.losses",
    "to_transformers": "hfx_plugins.finetune.io",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FinetuneConfig",
    "FinetuneRecipe",
    "FinetuneRunConfig",
    "SequenceClassifier",
    "causal_lm_loss",
    "classification_loss",
    "plugin",
    "seq2seq_loss",
    "to_transformers",
]

plugin = Plugin(
    name="finetune",
    description="Full fine-tuning with a task head: classification, causal LM or seq2seq",
    config_cls=FinetuneConfig,
    run_config_cls=FinetuneRunConfig,
    apply=lazy("hfx_plugins.finetune.apply:apply"),
    recipe=lazy("hfx_plugins.finetune.recipe:FinetuneRecipe"),
    checks=lazy("hfx_plugins.finetune.checks:checks"),
    save=lazy("hfx_plugins.finetune.io:save"),
    load=lazy("hfx_plugins.finetune.io:load"),
    can_load=lazy("hfx_plugins.finetune.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
