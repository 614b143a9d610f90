"""Save and load a reward model in transformers' ``*ForSequenceClassification`` format (num_labels = 1).

The folder is what ``save_pretrained`` writes (``config.json`` + ``model.safetensors``), so
``AutoModelForSequenceClassification.from_pretrained(path)`` loads it without hfx and gives the same scores
(test: tests/plugins/reward/test_io.py). ``hfx_reward.json`` beside it records the :class:`RewardConfig` and
the score shift.

Two things make transformers' own pooling agree with hfx's attention-mask pooling:

- ``config.pad_token_id`` must not be the EOS that ends every scored text (transformers reads the rightmost
  token that is not the pad id). When the pad id is EOS or unset, :func:`save` writes the id of another
  special token of the tokenizer that never ends a text (smollm2: ``<|endoftext|>``) and saves the tokenizer
  with that pad token; without a tokenizer it writes ``pad_token_id: null`` (transformers then scores one
  unpadded text per call, correctly).
- The final shift (mean training score 0): an encoder's head has a bias and the shift is folded into it
  exactly. A decoder's head has none in transformers (``score`` is bias-free), so the shift cannot live in
  the weights: it is stored as ``reward_shift`` in config.json and hfx_reward.json, and transformers'
  logits equal hfx's scores minus ``reward_shift`` (differences between texts, all that a ranking or PPO's
  whitened advantages use, are identical).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from hfx.errors import HfxError
from hfx.io import (
    config_marker,
    has_config_marker,
    load_weights_strict,
    read_config_marker,
    write_config_marker,
)
from hfx_plugins.reward.apply import apply
from hfx_plugins.reward.config import RewardConfig
from hfx_plugins.reward.head import RewardModel

__all__ = ["MARKER", "can_load", "distinct_pad_token", "load", "load_reward_model", "save", "to_transformers"]

MARKER = config_marker("reward")


def distinct_pad_token(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """A special token to pad with that is not EOS (the current pad when it already differs), or None."""
    eos = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos:
        return tokenizer.pad_token
    for tok in [tokenizer.unk_token, *tokenizer.all_special_tokens, "<|endoftext|>", "<pad>"]:
        if tok and tok not in (eos, tokenizer.bos_token) and tok in tokenizer.get_vocab():
            return tok
    return None


def _checked_config(config: object) -> object:
    """``config``, after checking that transformers has a ``*ForSequenceClassification`` for its model type.

    Raises:
        HfxError: it has none (OLMoE in transformers 5.25): the reward model cannot be saved in transformers' format.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise HfxError(f"transformers has no *ForSequenceClassification for model type "
                       f"{getattr(config, 'model_type', '?')!r}, so this reward model cannot be saved in its format; "
                       "keep the model in memory or use a model type transformers can classify with")
    return config


def to_transformers(model: RewardModel) -> nn.Module:
    """The equivalent ``AutoModelForSequenceClassification`` (num_labels 1) with the same weights, checked strictly."""
    hf = AutoModelForSequenceClassification.from_config(copy.deepcopy(_checked_config(model.config)))
    result = hf.load_state_dict(model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise HfxError(f"{type(hf).__name__} does not have the layout of hfx's reward head (missing "
                       f"{result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}); this architecture "
                       "cannot be saved as a transformers classifier")
    return hf.eval()


def save(model: nn.Module, path: Path, cfg: RewardConfig | None = None,
         tokenizer: PreTrainedTokenizerBase | None = None) -> None:
    """Write the reward model with ``save_pretrained`` (safetensors) + ``hfx_reward.json`` (+ the tokenizer if given)."""
    if not isinstance(model, RewardModel):
        raise HfxError(f"reward's save needs a reward model (hfx.apply(model, 'reward')), got {type(model).__name__}")
    from hfx.protocols import config_of

    cfg = cfg or config_of(model, "reward") or RewardConfig()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf = to_transformers(model)
    eos = getattr(hf.config, "eos_token_id", None)
    if tokenizer is not None:
        pad = distinct_pad_token(tokenizer) if cfg.append_eos else tokenizer.pad_token
        tokenizer = _copy_with_pad(tokenizer, pad)
        hf.config.pad_token_id = tokenizer.pad_token_id if pad is not None else None
        tokenizer.save_pretrained(path)
    elif cfg.append_eos and hf.config.pad_token_id is not None and hf.config.pad_token_id == eos:
        hf.config.pad_token_id = None
    hf.config.reward_shift = float(model.shift)
    hf.save_pretrained(path)
    write_config_marker(path, "reward", cfg, RewardConfig, reward_shift=float(model.shift))


def _copy_with_pad(tokenizer: PreTrainedTokenizerBase, pad: str | None) -> PreTrainedTokenizerBase:
    tok = copy.deepcopy(tokenizer)
    if pad is not None:
        tok.pad_token = pad
    return tok


def can_load(path: Path) -> bool:
    """Whether ``path`` holds a reward model this plugin saved (its ``hfx.io`` config marker)."""
    return has_config_marker(path, "reward")


def load(model: nn.Module, path: Path) -> tuple[RewardModel, RewardConfig]:
    """Put the saved head on ``model`` (a backbone, ``*ForCausalLM`` or RewardModel) and load every weight strictly.

    Raises:
        HfxError: a missing, truncated or corrupted weights file, weights of another shape, or weights missing
            from / unknown to the model.
    """
    cfg, meta = read_config_marker(path, "reward", RewardConfig)
    reward = apply(model, cfg)
    load_weights_strict(reward, path, "load onto the backbone the reward model was trained from",
                        "load them onto the backbone they were trained from")
    reward.shift = float(meta.get("reward_shift", 0.0))  # 0 for encoders: their shift sits in the head's bias
    return reward, cfg


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """Load a saved reward model folder on its own (backbone included): ``(model, tokenizer)``.

    Goes through :func:`hfx.load`, so the model carries its :class:`RewardConfig` in the applied-plugins record
    (``hfx.protocols.config_of(model, "reward")``) and a damaged file is named in the error.
    """
    from transformers import AutoTokenizer

    import hfx

    hf = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype, use_safetensors=True)
    model = hfx.load(hf, Path(path))
    return model.eval(), AutoTokenizer.from_pretrained(str(path))
