"""``hfx.apply(model, "prefix_tuning", ...)``: freeze the model, add the prefix encoder and the hook that feeds it."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.prefix_tuning.cache import PrefixInjector, check_cache_layout
from hfx_plugins.prefix_tuning.config import PrefixTuningConfig
from hfx_plugins.prefix_tuning.encoder import PrefixEncoder
from hfx_plugins.prompt_learning import fill_sizes, find_encoder

__all__ = ["apply", "get_encoder", "resolve_config"]

ATTR = "prefix_encoder"


def resolve_config(model: nn.Module, cfg: PrefixTuningConfig) -> PrefixTuningConfig:
    """``cfg`` with the sizes left unset filled from the model, as peft's ``_prepare_prompt_learning_config`` does.

    Raises:
        HfxError: a model family prefix tuning cannot serve, or sizes that do not fit the model's attention
            (naming both shapes).
    """
    sizes, filled = fill_sizes(model, cfg, "prefix_tuning", kv_heads=True)
    filled["encoder_hidden_size"] = cfg.encoder_hidden_size or filled["token_dim"]
    out = dataclasses.replace(cfg, **filled)
    task = out.task_type
    want = (sizes["num_layers"], sizes["num_attention_heads"], sizes["head_dim"])
    got = (out.num_layers, out.num_attention_heads, out.token_dim // out.num_attention_heads)
    if got != want or out.token_dim % out.num_attention_heads:
        raise HfxError(f"prefix_tuning sizes (layers, KV heads, head_dim) = {got} (token_dim {out.token_dim}) do not fit "
                       f"{type(model).__name__}, whose attention has {want}; leave num_layers, token_dim and "
                       "num_attention_heads unset to read them from the model")
    if out.num_transformer_submodules != (2 if task == "SEQ_2_SEQ_LM" else 1):
        raise HfxError(f"prefix_tuning.num_transformer_submodules={out.num_transformer_submodules} does not fit a {task} model")
    return out


def get_encoder(model: nn.Module) -> PrefixEncoder:
    """The prefix encoder ``hfx.apply`` added to ``model``.

    Raises:
        HfxError: the model has no prefix.
    """
    return find_encoder(model, ATTR, PrefixEncoder, "prefix_tuning", "prefix")


def apply(model: nn.Module, cfg: PrefixTuningConfig) -> nn.Module:
    """Freeze ``model``, attach a :class:`PrefixEncoder` as ``model.prefix_encoder`` and the cache hook; return it.

    The encoder is created from the caller's RNG, in peft's parameter order (same seed, same prefix as
    ``get_peft_model``). Only the encoder's parameters train.

    Raises:
        HfxError: a prefix already there, gradient checkpointing on, an unsupported family or mismatched sizes.
    """
    if isinstance(getattr(model, ATTR, None), PrefixEncoder):
        raise HfxError("this model already has a prefix (prefix_tuning was applied); apply it once per model")
    if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        raise HfxError("prefix_tuning does not work with gradient checkpointing: transformers replays checkpointed "
                       "layers without the KV cache that holds the prefix; call model.gradient_checkpointing_disable()")
    cfg = resolve_config(model, cfg)
    window = check_cache_layout(model, cfg.num_virtual_tokens)  # type: ignore[arg-type]
    for p in model.parameters():
        p.requires_grad_(False)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    encoder = PrefixEncoder(cfg.num_virtual_tokens, cfg.token_dim, cfg.num_layers, cfg.encoder_hidden_size,  # type: ignore[arg-type]
                            cfg.prefix_projection, cfg.init_weights).to(device)
    setattr(model, ATTR, encoder)
    hook = PrefixInjector(encoder, cfg.num_virtual_tokens, cfg.num_layers, cfg.num_attention_heads,  # type: ignore[arg-type]
                          cfg.num_transformer_submodules, window)  # type: ignore[arg-type]
    encoder.hook_handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    encoder.injector = hook
    encoder.config = cfg
    return model
