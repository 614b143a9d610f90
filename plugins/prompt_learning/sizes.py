"""The sizes peft reads from a model config for prompt learning, and the model families it serves.

Both plugins fill their unset ``num_layers``, ``token_dim``, ``num_attention_heads`` and
``num_transformer_submodules`` as peft 0.21.2's ``_prepare_prompt_learning_config`` does (``peft/utils/other.py``),
and refuse a model that is neither a decoder LM nor an encoder-decoder LM.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hfx.errors import HfxError
from hfx.protocols import applied

__all__ = ["fill_sizes", "model_sizes", "task_type_of"]

_FAMILIES = "decoder language models (Llama, GPT-2, Mistral, Qwen2, ...) and encoder-decoder models (T5, BART, ...)"


def task_type_of(model: nn.Module, plugin: str) -> str:
    """peft's task type for ``model``: CAUSAL_LM (a ...ForCausalLM) or SEQ_2_SEQ_LM (an encoder-decoder LM).

    Raises:
        HfxError: any other model (an encoder such as BERT, a classifier, a bare backbone).
    """
    config = getattr(model, "config", None)
    name = type(model).__name__
    if config is not None and getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return "SEQ_2_SEQ_LM"
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "CAUSAL_LM"
    before = [n for n, _ in applied(model)]  # a plugin that made it a score model or an embedder: name it
    head = f"{plugin} cannot be applied to a {before[-1]} model ({name}): it " if before else f"{plugin} "
    raise HfxError(f"{head}works on {_FAMILIES}; {name} is neither (load it with AutoModelForCausalLM or "
                   "AutoModelForSeq2SeqLM)")


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    return next((cfg[k] for k in keys if cfg.get(k) is not None), None)


def model_sizes(model: nn.Module, kv_heads: bool) -> dict[str, int]:
    """num_layers, token_dim, num_attention_heads and the real head_dim, as peft fills them from the config.

    Follows ``_prepare_prompt_learning_config`` (peft 0.21.2, ``utils/other.py``): layers from
    ``num_hidden_layers``/``num_layers``/``n_layer``, width from ``hidden_size``/``n_embd``/``d_model``, heads from
    ``num_attention_heads``/``n_head``/``num_heads``. With ``kv_heads`` (prefix tuning) and a config that has
    ``num_key_value_heads``, token_dim becomes head_dim x KV heads and the heads the KV heads (grouped-query
    attention: the cache holds the KV heads only).
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cfg = config.to_dict()
    layers = getattr(config, "num_hidden_layers", None) or _first(cfg, "num_layers", "n_layer")
    dim = _first(cfg, "hidden_size", "n_embd", "d_model")
    heads = _first(cfg, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
    if not (layers and dim and heads):
        raise HfxError(f"cannot read the layer count, width and heads of {type(model).__name__} from its config; "
                       "set num_layers, token_dim and num_attention_heads")
    head_dim = _first(cfg, "head_dim", "d_kv") or dim // heads
    if kv_heads and cfg.get("num_key_value_heads"):
        dim, heads = head_dim * cfg["num_key_value_heads"], cfg["num_key_value_heads"]
    return {"num_layers": int(layers), "token_dim": int(dim), "num_attention_heads": int(heads), "head_dim": int(head_dim)}


def fill_sizes(model: nn.Module, cfg: Any, plugin: str, kv_heads: bool) -> tuple[dict[str, int], dict[str, Any]]:
    """The sizes read from ``model`` and ``cfg``'s task type and sizes, the unset ones filled from them.

    As peft's ``_prepare_prompt_learning_config`` fills a prompt-learning config: ``task_type`` from the model
    (:func:`task_type_of`), ``num_layers``, ``token_dim`` and ``num_attention_heads`` from :func:`model_sizes`,
    ``num_transformer_submodules`` 2 for an encoder-decoder model and 1 for a decoder.

    Args:
        model: The model the plugin is applied to.
        cfg: A config with peft's fields ``task_type``, ``num_layers``, ``token_dim``, ``num_attention_heads``
            and ``num_transformer_submodules`` (None or "" when unset).
        plugin: The plugin's name, for the messages.
        kv_heads: As in :func:`model_sizes`.

    Returns:
        ``(sizes, fields)``: what :func:`model_sizes` read, and the fields to give ``dataclasses.replace(cfg, ...)``.

    Raises:
        HfxError: the other prompt-learning plugin already applied, a model family prompt learning cannot serve, or
            a ``task_type`` the model does not have.
    """
    other = next((n for n, _ in applied(model) if n in ("prompt_tuning", "prefix_tuning") and n != plugin), None)
    if other is not None:  # their hooks would each widen the mask and shift the positions for their own tokens
        raise HfxError(f"{plugin} cannot be applied to a {other} model: both rewrite the same inputs (mask, positions, "
                       "cache) for their own virtual tokens, and peft does not stack prompt-learning methods either; "
                       "use one of them")
    task = task_type_of(model, plugin)
    if cfg.task_type and cfg.task_type != task:
        raise HfxError(f"{plugin}.task_type is {cfg.task_type} but {type(model).__name__} is a {task} model")
    sizes = model_sizes(model, kv_heads)
    filled: dict[str, Any] = {k: getattr(cfg, k) if getattr(cfg, k) is not None else sizes[k]
                              for k in ("num_layers", "token_dim", "num_attention_heads")}
    filled["num_transformer_submodules"] = cfg.num_transformer_submodules or (2 if task == "SEQ_2_SEQ_LM" else 1)
    filled["task_type"] = task
    return sizes, filled
