"""Config of the ``prefix_tuning`` plugin.

:class:`PrefixTuningConfig` is what ``hfx.apply(model, "prefix_tuning", ...)`` takes: peft 0.21.2's
``PrefixTuningConfig`` fields with their names and meanings (the sizes left unset are read from the model
config, as peft does). :class:`PrefixTuningRunConfig` adds what only ``hfx run`` uses (the label-word
classification task of the recipe, and the prefix's text init).
"""

from __future__ import annotations

from dataclasses import dataclass

from hfx.errors import HfxError
from hfx_plugins.prompt_learning import LabelWordTask, check_prompt_learning

__all__ = ["PrefixTuningConfig", "PrefixTuningRunConfig"]


@dataclass
class PrefixTuningConfig:
    """Prefix tuning: trained keys and values prepended in every attention layer (Li & Liang 2021,
    https://arxiv.org/abs/2101.00190), with peft's field names."""

    num_virtual_tokens: int = 20
    """Number of virtual tokens: the prefix length added to every layer's keys and values."""
    token_dim: int | None = None
    """Width of one layer's keys (heads x head_dim); unset: from the model (the KV heads' width under
    grouped-query attention)."""
    num_transformer_submodules: int | None = None
    """1 for decoder models, 2 for encoder-decoder models; unset: from the model."""
    num_attention_heads: int | None = None
    """Heads of the prefix keys and values; unset: the model's KV heads (its attention heads without
    grouped-query attention)."""
    num_layers: int | None = None
    """Number of layers that get a prefix; unset: the model's layer count."""
    encoder_hidden_size: int | None = None
    """Hidden width of the reparameterisation MLP (prefix_projection); unset: token_dim."""
    prefix_projection: bool = False
    """Reparameterise the prefix through a 2-layer MLP (Embedding(n, token_dim) -> Linear -> Tanh -> Linear to
    num_layers x 2 x token_dim), as the paper does to stabilise training."""
    init_weights: str | None = None
    """zero: start from an all-zero prefix (the last MLP layer, or the prefix itself, zeroed); unset: N(0, 1)
    embeddings and torch's default Linear init."""
    task_type: str = ""
    """peft task type written to adapter_config.json (CAUSAL_LM or SEQ_2_SEQ_LM); empty: from the model class."""

    def __post_init__(self) -> None:
        check_prompt_learning(self, "prefix_tuning")
        if self.encoder_hidden_size is not None and self.encoder_hidden_size <= 0:
            raise HfxError(f"prefix_tuning.encoder_hidden_size must be positive or unset, got {self.encoder_hidden_size}")
        if self.init_weights not in (None, "zero"):
            raise HfxError(f"prefix_tuning.init_weights must be 'zero' or unset (random), got {self.init_weights!r}")


@dataclass
class PrefixTuningRunConfig(LabelWordTask, PrefixTuningConfig):
    """The ``prefix_tuning:`` section of ``hfx run``: :class:`PrefixTuningConfig` plus the recipe's label-word task
    (``template``, ``label_words``: :class:`hfx_plugins.prompt_learning.LabelWordTask`)."""

    section = "prefix_tuning"

    init_text: str = ""
    """Start the prefix from the keys and values this text leaves in the model's cache (Li & Liang 2021, §7.2;
    hfx only, see text_init.py): the prefix-tuned model starts as the frozen model reading the text. Empty:
    peft's init (init_weights). Needs prefix_projection false."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_text and self.prefix_projection:
            raise HfxError("prefix_tuning.init_text writes the prefix itself; it needs prefix_projection=false")
