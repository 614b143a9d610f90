"""``hfx run plugin=prompt_tuning``: train virtual-token embeddings to classify by label words; accuracy before
and after.

With no other argument (``configs/default.yaml``): ``smollm2-135m`` on the bundled ``sentiment_foobar`` set,
each sentence followed by the label word of its class (" foo" / " bar", words the model has no prior for).

1. setup: load the model; ``hfx.apply(model, "prompt_tuning")`` freezes it and adds ``model.prompt_encoder``,
   ``n`` trained input embeddings started from a text's token embeddings (``prompt_tuning_init=TEXT``, the
   default preset, as Lester et al. 2021 recommend for small models), a random draw or random vocabulary
   rows, and the hooks that prepend them to every input; one training row per sentence, the loss on the
   label word only.
2. evaluate: every label word scored after every prompt, the virtual tokens in front (lm-eval's ``acc``);
   ``label_nll``.
3. train: AdamW on ``model.prompt_encoder`` alone (a large learning rate, 3e-2 in the preset: prompt tuning
   needs one).
4. evaluate again; save ``artifacts/adapter`` in peft's format.

Steps 1-4 are :class:`hfx_plugins.prompt_learning.LabelWordRecipe`, shared with ``prefix_tuning``; what this
plugin adds is the prompt, described in the setup line by :meth:`PromptTuningRecipe.describe`.
"""

from __future__ import annotations

from torch import nn

from hfx_plugins.prompt_learning import LabelWordRecipe
from hfx_plugins.prompt_tuning.apply import get_encoder

__all__ = ["PromptTuningRecipe"]


class PromptTuningRecipe(LabelWordRecipe):
    """setup -> evaluate -> train -> evaluate -> save, training only ``model.prompt_encoder``."""

    plugin = "prompt_tuning"

    def describe(self, model: nn.Module) -> str:
        """E.g. "10 virtual-token embeddings of width 576 (init TEXT)"."""
        cfg = get_encoder(model).config
        return f"{cfg.num_virtual_tokens} virtual-token embeddings of width {cfg.token_dim} (init {cfg.prompt_tuning_init})"
