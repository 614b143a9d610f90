"""``hfx.apply(model, "prompt_tuning", ...)``: freeze the model, add the prompt embeddings and the hooks that feed them."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from hfx.errors import HfxError
from hfx_plugins.prompt_learning import fill_sizes, find_encoder
from hfx_plugins.prompt_tuning.config import PromptTuningConfig
from hfx_plugins.prompt_tuning.encoder import PromptEmbedding, load_tokenizer
from hfx_plugins.prompt_tuning.inject import PromptInjector

__all__ = ["apply", "get_encoder", "remove", "resolve_config"]

ATTR = "prompt_encoder"


def resolve_config(model: nn.Module, cfg: PromptTuningConfig) -> PromptTuningConfig:
    """``cfg`` with the sizes left unset filled from the model, as peft's ``_prepare_prompt_learning_config`` does.

    Raises:
        HfxError: a model family prompt tuning cannot serve, or a token_dim other than the embedding width.
    """
    out = dataclasses.replace(cfg, **fill_sizes(model, cfg, "prompt_tuning", kv_heads=False)[1])
    width = model.get_input_embeddings().weight.shape[1]
    if out.token_dim != width:
        raise HfxError(f"prompt_tuning.token_dim={out.token_dim} but {type(model).__name__}'s input embeddings are "
                       f"{width} wide; leave token_dim unset")
    return out


def get_encoder(model: nn.Module) -> PromptEmbedding:
    """The prompt embeddings ``hfx.apply`` added to ``model``.

    Raises:
        HfxError: the model has no prompt.
    """
    return find_encoder(model, ATTR, PromptEmbedding, "prompt_tuning", "prompt")


def _init_ids(cfg: PromptTuningConfig, tokenizer: Any) -> list[int] | None:
    if cfg.prompt_tuning_init != "TEXT":
        return None
    if tokenizer is None:
        if not cfg.tokenizer_name_or_path:
            raise HfxError("prompt_tuning_init=TEXT needs tokenizer_name_or_path (or hfx.apply(..., tokenizer=tok))")
        tokenizer = load_tokenizer(cfg.tokenizer_name_or_path, cfg.tokenizer_kwargs)
    return list(tokenizer(cfg.prompt_tuning_init_text)["input_ids"])  # special tokens kept, as peft does


def apply(model: nn.Module, cfg: PromptTuningConfig, tokenizer: Any = None, *, initialise: bool = True) -> nn.Module:
    """Freeze ``model``, attach :class:`PromptEmbedding` as ``model.prompt_encoder`` and the input hooks; return it.

    Args:
        model: A decoder or encoder-decoder language model (changed in place).
        cfg: The config; unset sizes are read from the model.
        tokenizer: The init text's tokenizer (TEXT init), instead of ``cfg.tokenizer_name_or_path``.
        initialise: False skips the SAMPLE_VOCAB / TEXT init (loading overwrites the weights anyway).

    Raises:
        HfxError: a prompt already there, an unsupported family, a token_dim that does not fit, or TEXT init
            without a tokenizer.
    """
    if isinstance(getattr(model, ATTR, None), PromptEmbedding):
        raise HfxError("this model already has a prompt (prompt_tuning was applied); apply it once per model")
    cfg = resolve_config(model, cfg)
    words = model.get_input_embeddings()
    init = cfg.prompt_tuning_init if initialise else "RANDOM"
    ids = _init_ids(cfg, tokenizer) if initialise else None
    if tokenizer is not None and not cfg.tokenizer_name_or_path and getattr(tokenizer, "name_or_path", ""):
        cfg = dataclasses.replace(cfg, tokenizer_name_or_path=tokenizer.name_or_path)  # written to the config file
    for p in model.parameters():
        p.requires_grad_(False)
    total = cfg.num_virtual_tokens * cfg.num_transformer_submodules  # type: ignore[operator]
    device = words.weight.device
    encoder = PromptEmbedding(total, cfg.token_dim, init, words, ids).to(device)  # type: ignore[arg-type]
    setattr(model, ATTR, encoder)
    hook = PromptInjector(encoder, cfg.num_virtual_tokens, words)
    if cfg.task_type == "SEQ_2_SEQ_LM":
        handles = [model.register_forward_pre_hook(hook.seq2seq_hook, with_kwargs=True),
                   model.get_encoder().register_forward_pre_hook(hook.encoder_hook, with_kwargs=True)]
    else:
        handles = [model.register_forward_pre_hook(hook.decoder_hook, with_kwargs=True),
                   model.register_forward_hook(hook.strip_hook)]
    encoder.hook_handles = handles
    encoder.injector = hook
    encoder.config = cfg
    return model


def remove(model: nn.Module) -> None:
    """Take the prompt and its hooks off ``model`` (the base weights stay frozen)."""
    enc = get_encoder(model)
    for handle in enc.hook_handles:
        handle.remove()
    delattr(model, ATTR)


