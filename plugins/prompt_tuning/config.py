"""Config of the ``prompt_tuning`` plugin.

:class:`PromptTuningConfig` is what ``hfx.apply(model, "prompt_tuning", ...)`` takes: peft 0.21.2's
``PromptTuningConfig`` fields with their names and meanings (sizes left unset are read from the model config,
as peft does). :class:`PromptTuningRunConfig` adds what only ``hfx run`` uses (the recipe's label-word task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hfx.errors import HfxError
from hfx_plugins.prompt_learning import LabelWordTask, check_prompt_learning

__all__ = ["INITS", "PromptTuningConfig", "PromptTuningRunConfig"]

INITS = ("RANDOM", "SAMPLE_VOCAB", "TEXT")


@dataclass
class PromptTuningConfig:
    """Prompt tuning: trained input embeddings prepended to every input (Lester et al. 2021,
    https://arxiv.org/abs/2104.08691), with peft's field names."""

    num_virtual_tokens: int = 20
    """Number of virtual tokens (trained embeddings) prepended to the input."""
    token_dim: int | None = None
    """Width of one virtual token (the model's embedding width); unset: from the model."""
    num_transformer_submodules: int | None = None
    """1 for decoder models, 2 for encoder-decoder models (peft then stores 2 x num_virtual_tokens rows and uses
    the first half, for the encoder); unset: from the model."""
    num_attention_heads: int | None = None
    """The model's attention heads (written to the config file, unused by prompt tuning); unset: from the model."""
    num_layers: int | None = None
    """The model's layer count (written to the config file, unused by prompt tuning); unset: from the model."""
    prompt_tuning_init: str = "RANDOM"
    """RANDOM: N(0, 1) embeddings; SAMPLE_VOCAB: embeddings of random vocabulary tokens; TEXT: embeddings of
    prompt_tuning_init_text's tokens, repeated or cut to num_virtual_tokens."""
    prompt_tuning_init_text: str | None = None
    """The text whose token embeddings start the prompt (prompt_tuning_init=TEXT)."""
    tokenizer_name_or_path: str | None = None
    """Tokenizer of that text (a folder, or an offline model name such as smollm2-135m); hfx.apply(...,
    tokenizer=tok) may pass a tokenizer object instead."""
    tokenizer_kwargs: dict[str, Any] | None = None
    """Keyword arguments for AutoTokenizer.from_pretrained (trust_remote_code is dropped, as peft does)."""
    task_type: str = ""
    """peft task type written to adapter_config.json (CAUSAL_LM or SEQ_2_SEQ_LM); empty: from the model class."""

    def __post_init__(self) -> None:
        check_prompt_learning(self, "prompt_tuning")
        init = str(self.prompt_tuning_init).upper()
        if init not in INITS:
            raise HfxError(f"prompt_tuning.prompt_tuning_init must be one of {', '.join(INITS)}, got {self.prompt_tuning_init!r}")
        self.prompt_tuning_init = init
        if init == "TEXT" and not self.prompt_tuning_init_text:
            raise HfxError("prompt_tuning.prompt_tuning_init=TEXT needs prompt_tuning_init_text (the text whose "
                           "embeddings start the prompt)")


@dataclass
class PromptTuningRunConfig(LabelWordTask, PromptTuningConfig):
    """The ``prompt_tuning:`` section of ``hfx run``: :class:`PromptTuningConfig` plus the recipe's label-word task
    (``template``, ``label_words``: :class:`hfx_plugins.prompt_learning.LabelWordTask`)."""

    section = "prompt_tuning"
