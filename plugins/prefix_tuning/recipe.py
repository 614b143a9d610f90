"""``hfx run plugin=prefix_tuning``: train per-layer key and value prefixes to classify by label words; accuracy before and after.

With no other argument: ``smollm2-135m`` on the bundled sentiment set, each review followed by the word of its
class, the loss on that word only; accuracy picks the label word of highest log-likelihood (lm-evaluation-harness's
multiple-choice ``acc``). The script is :class:`hfx.runner.label_words.LabelWordRecipe`; ``artifacts/adapter`` is
peft's format (``PeftModel.from_pretrained(base, path)`` reads it).
"""

from __future__ import annotations

from hfx.runner.label_words import LabelWordRecipe

__all__ = ["PrefixTuningRecipe"]


class PrefixTuningRecipe(LabelWordRecipe):
    """setup -> evaluate -> train -> evaluate -> save, training only ``model.prefix_encoder``."""

    plugin = "prefix_tuning"
