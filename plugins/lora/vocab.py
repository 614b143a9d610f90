"""Embedding rows an adapter depends on: saved with it when the vocabulary changed, checked when loaded.

Adding tokens (``tokenizer.add_tokens`` + ``model.resize_token_embeddings``) changes weights outside the
LoRA matrices: the new rows of the input embeddings (and of an untied output layer) are random or mean
initialised, and the adapter was trained against those exact rows. peft's ``save_embedding_layers="auto"``
therefore writes the whole embedding layers when the model's vocabulary differs from its base
``config.json``; hfx does the same, under peft's keys (``base_model.model.model.embed_tokens.weight``,
``base_model.model.lm_head.weight``), so ``PeftModel.from_pretrained`` on a resized base loads them. hfx
also writes them when the embeddings were trained (``requires_grad`` on the base layer), and records the
number of embedding rows in its manifest, so that loading onto a base of another size is refused with the
reason instead of failing at the first new token.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["base_vocab_size", "embedding_rows", "embedding_state"]


def _base(layer: nn.Module | None) -> nn.Module | None:
    """The plain layer under a LoRA or modules_to_save wrapper."""
    return getattr(layer, "base_layer", None) or getattr(layer, "original_module", None) or layer


def embedding_rows(model: nn.Module) -> int | None:
    """Rows of the input embedding (the vocabulary the model embeds), or None for a model without one."""
    get = getattr(model, "get_input_embeddings", None)
    layer = _base(get()) if get is not None else None
    weight = getattr(layer, "weight", None)
    return int(weight.shape[0]) if weight is not None else None


def base_vocab_size(model: nn.Module) -> int | None:
    """``vocab_size`` of the base model's ``config.json`` (``config.name_or_path``, a local folder), or None."""
    source = getattr(getattr(model, "config", None), "name_or_path", "") or ""
    file = Path(source) / "config.json" if source else None
    if file is None or not file.is_file():
        return None
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    size = raw.get("vocab_size") or (raw.get("text_config") or {}).get("vocab_size")
    return int(size) if isinstance(size, int) else None


def embedding_state(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """peft's keys -> the input and output embedding weights, when the vocabulary was resized or they trained.

    Args:
        model: The model carrying the adapters.
        prefix: peft's key prefix (``base_model.model.``).

    Returns:
        The tensors to write next to the adapter (empty when the embeddings are the base's own).
    """
    rows, base = embedding_rows(model), base_vocab_size(model)
    layers = [model.get_input_embeddings(), model.get_output_embeddings()] if hasattr(model, "get_input_embeddings") else []
    plain = [_base(layer) for layer in layers if layer is not None]
    resized = rows is not None and base is not None and rows != base
    trained = any(p.requires_grad for layer in plain for p in layer.parameters(recurse=False))
    if not (resized or trained):
        return {}
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if any(module is layer for layer in plain):
            for key, value in module.named_parameters(recurse=False):
                out[f"{prefix}{name}.{key}"] = value
    if resized:
        warnings.warn(f"the embeddings have {rows} rows where the base config has {base}: they are saved with the "
                      "adapter (as peft's save_embedding_layers='auto')", UserWarning, stacklevel=3)
    return out
