"""``finetune``: full fine-tuning with a task-specific head, on encoders, decoders and encoder-decoders.

- encoder (``minilm``): sequence classification with hfx's head (:mod:`.heads`), saved in transformers' layout;
- decoder (``smollm2-135m``): causal language modelling;
- encoder-decoder (``minilm2minilm``): sequence-to-sequence generation.
"""

from pathlib import Path

from hfx.registry import Plugin
from hfx_plugins.finetune.apply import apply
from hfx_plugins.finetune.checks import checks
from hfx_plugins.finetune.config import FinetuneConfig
from hfx_plugins.finetune.io import can_load, load, save
from hfx_plugins.finetune.recipe import FinetuneRecipe

__all__ = ["FinetuneConfig", "FinetuneRecipe", "plugin"]

plugin = Plugin(
    name="finetune",
    description="Full fine-tuning with a task head: classification, causal LM or seq2seq",
    config_cls=FinetuneConfig,
    apply=apply,
    recipe=FinetuneRecipe,
    checks=checks,
    save=save,
    load=load,
    can_load=can_load,
    presets_dir=Path(__file__).parent / "configs",
)
