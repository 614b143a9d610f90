"""``hfx run plugin=prefix_tuning``: train per-layer key and value prefixes to classify by label words; accuracy
before and after.

With no other argument (``configs/default.yaml``): ``smollm2-135m`` on the bundled ``sentiment_foobar`` set,
each sentence followed by the label word of its class (" foo" / " bar", words the model has no prior for).

1. setup: load the model; ``hfx.apply(model, "prefix_tuning")`` freezes it, adds ``model.prefix_encoder``
   (``n`` virtual tokens x layers x keys and values, optionally through an MLP) and the forward pre-hook that
   puts the prefix into every layer's KV cache; with ``init_text`` the prefix starts as that text's keys and
   values (:func:`hfx_plugins.prefix_tuning.init_from_text`); one training row per sentence, the loss on the
   label word only.
2. evaluate: every label word scored after every prompt with the prefix in the cache (lm-eval's ``acc``);
   ``label_nll``.
3. train: AdamW on ``model.prefix_encoder`` alone (gradient checkpointing is refused: it would replay the
   layers without the cache that holds the prefix).
4. evaluate again; save ``artifacts/adapter`` in peft's format, plus the MLP's parameters under
   ``hfx_prefix_encoder.*`` when ``prefix_projection`` is on, so a saved run can resume with its MLP.

Steps 1-4 are :class:`hfx_plugins.prompt_learning.LabelWordRecipe`, shared with ``prompt_tuning``; what this
plugin adds is the prefix, described in the setup line by :meth:`PrefixTuningRecipe.describe`.
"""

from __future__ import annotations

from torch import nn

from hfx_plugins.prefix_tuning.apply import get_encoder
from hfx_plugins.prefix_tuning.text_init import init_from_text
from hfx_plugins.prompt_learning import LabelWordRecipe

__all__ = ["PrefixTuningRecipe"]


class PrefixTuningRecipe(LabelWordRecipe):
    """setup -> evaluate -> train -> evaluate -> save, training only ``model.prefix_encoder``."""

    plugin = "prefix_tuning"

    def setup(self) -> None:
        """:meth:`LabelWordRecipe.setup`, then the prefix started from ``prefix_tuning.init_text`` if set."""
        super().setup()
        if self.cfg.init_text:
            ids = init_from_text(self.model, self.tokenizer, self.cfg.init_text)
            self.ctx.print(f"prefix_tuning: prefix started from the keys and values of {len(ids)} tokens of "
                           f"{self.cfg.init_text!r}")

    def describe(self, model: nn.Module) -> str:
        """E.g. "a 10-token key/value prefix in each of 30 layers (3 KV heads of 64)"."""
        cfg = get_encoder(model).config
        mlp = f", through an MLP of width {cfg.encoder_hidden_size}" if cfg.prefix_projection else ""
        return (f"a {cfg.num_virtual_tokens}-token key/value prefix in each of {cfg.num_layers} layers "
                f"({cfg.num_attention_heads} KV heads of {cfg.token_dim // cfg.num_attention_heads}{mlp})")
