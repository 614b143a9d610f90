"""Save and load prefixes in peft's format, strictly, in a form that can also resume training.

The folder holds ``adapter_config.json`` (peft's ``PrefixTuningConfig`` keys, ``inference_mode`` true) and
``adapter_model.safetensors`` whose tensor ``prompt_embeddings`` is the flat prefix ``(n, L * 2 * d)``: what
peft saves and what ``PeftModel.from_pretrained`` loads (peft 0.21.2, ``BasePromptEncoder``).

With ``prefix_projection`` peft saves only the MLP's output, so its checkpoint cannot continue training with
the MLP (a known peft limitation). hfx also writes the MLP's parameters under ``hfx_prefix_encoder.*``: peft loads with
``load_state_dict(strict=False)`` and warns about missing keys only, so it ignores them (checked in the tests),
and ``hfx.load`` rebuilds the MLP from them. A peft-saved projection prefix loads in hfx as its flat output
(``prefix_projection`` false), which trains as a plain prefix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.prefix_tuning.apply import apply, get_encoder
from hfx_plugins.prefix_tuning.config import PrefixTuningConfig
from hfx_plugins.prompt_learning import (
    EMBEDDINGS_KEY,
    adapter_config,
    is_adapter,
    model_sizes,
    read_adapter,
    write_adapter,
)

__all__ = ["RESUME_PREFIX", "can_load", "load", "save"]

RESUME_PREFIX = "hfx_prefix_encoder."
_FIELDS = ("num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers",
           "encoder_hidden_size", "prefix_projection")


def save(model: nn.Module, path: Path) -> None:
    """Write the model's prefix under ``path`` in peft's format (plus the MLP under ``hfx_prefix_encoder.*``)."""
    enc = get_encoder(model)
    cfg: PrefixTuningConfig = enc.config
    config = adapter_config(model, "PREFIX_TUNING", cfg, _FIELDS)
    if cfg.init_weights is not None:  # peft >= 0.19 knows this key; older releases refuse unknown keys
        config["init_weights"] = cfg.init_weights
    with torch.no_grad():
        tensors = {EMBEDDINGS_KEY: enc()}  # (n, L * 2 * d)
    tensors.update({RESUME_PREFIX + k: v for k, v in enc.resume_state().items()})
    write_adapter(Path(path), config, tensors)


def can_load(path: Path) -> bool:
    """Whether ``path`` holds a peft adapter with ``"peft_type": "PREFIX_TUNING"`` in its config."""
    return is_adapter(Path(path), "PREFIX_TUNING")


def _attention_name(model: nn.Module) -> str:
    return next((name for name, m in model.named_modules() if type(m).__name__.endswith("Attention")), "layer 0")


def _check_fits(model: nn.Module, cfg: PrefixTuningConfig, shape: tuple[int, ...], folder: Path) -> None:
    s = model_sizes(model, kv_heads=True)
    ours = (cfg.num_layers, cfg.num_attention_heads, (cfg.token_dim or 0) // (cfg.num_attention_heads or 1))
    theirs = (s["num_layers"], s["num_attention_heads"], s["head_dim"])
    expected = (cfg.num_virtual_tokens, 2 * (cfg.num_layers or 0) * (cfg.token_dim or 0))
    if ours != theirs or (not cfg.prefix_projection and shape != expected):
        raise HfxError(f"{folder}: the prefix (prompt_embeddings {shape}) has (layers, KV heads, head_dim) = {ours}, "
                       f"but {type(model).__name__}'s {_attention_name(model)} has {theirs}; load the adapter onto "
                       "the base model it was trained on")


def load(model: nn.Module, path: Path) -> tuple[nn.Module, PrefixTuningConfig]:
    """Add the prefix saved under ``path`` (by hfx or peft) to ``model``; every tensor must fit.

    Raises:
        HfxError: not a prefix-tuning adapter, a pickle, sizes that do not fit the model (naming the attention
            layer and both shapes), or resume tensors that do not fit the MLP.
    """
    folder = Path(path)
    raw, tensors = read_adapter(folder, "PREFIX_TUNING")
    flat = tensors.pop(EMBEDDINGS_KEY)
    resume = {k.removeprefix(RESUME_PREFIX): v for k, v in tensors.items() if k.startswith(RESUME_PREFIX)}
    unknown = [k for k in tensors if not k.startswith(RESUME_PREFIX)]
    if unknown:
        raise HfxError(f"{folder}: unexpected tensor {unknown[0]!r} beside prompt_embeddings; not a prefix adapter")
    fields = {k: raw[k] for k in _FIELDS if raw.get(k) is not None}
    cfg = PrefixTuningConfig(**fields, init_weights=raw.get("init_weights"), task_type=raw.get("task_type") or "")
    if cfg.prefix_projection and not resume:  # peft's checkpoint: the MLP's output only (a known peft limitation)
        cfg = dataclasses.replace(cfg, prefix_projection=False)
    _check_fits(model, cfg, tuple(flat.shape), folder)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG alone
        apply(model, cfg)
    enc = get_encoder(model)
    try:
        with torch.no_grad():
            if cfg.prefix_projection:
                own = enc.state_dict()
                if set(resume) != set(own) or any(resume[k].shape != own[k].shape for k in own):
                    raise HfxError(f"{folder}: the saved prefix MLP ({sorted(resume)}) does not fit "
                                   f"encoder_hidden_size={cfg.encoder_hidden_size}; the adapter is inconsistent")
                enc.load_state_dict(resume)
            else:
                enc.embedding.weight.copy_(flat.to(enc.embedding.weight.dtype))
    except BaseException:
        enc.hook_handle.remove()
        delattr(model, "prefix_encoder")
        raise
    return model, enc.config
