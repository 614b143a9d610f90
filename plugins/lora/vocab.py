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

Rows of the same number can still be other rows (a base resized again, its new tokens drawn anew), and a
targeted weight can belong to another checkpoint of the same architecture: peft loads both silently. hfx's
manifest therefore also records what the adapter depends on (:func:`dependencies`): the sha256 of the
embedding layers and of the base weight of every adapted layer. Loading compares them (:func:`check_dependencies`):
other embedding rows are refused, another targeted weight is a warning, each naming the layer. peft's loader
never reads the manifest, and a folder without digests (saved by peft) loads as before.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from hfx.errors import HfxError
from hfx.protocols import is_quantized
from hfx_plugins.lora.layer import LoraLayer

__all__ = ["base_vocab_size", "check_dependencies", "dependencies", "embedding_rows", "embedding_state"]


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
        The tensors to write next to the adapter, each (vocab, dim) (empty when the embeddings are the base's own).
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


def _path(key: str) -> str:
    """A module path as on the bare base: LoRA and modules_to_save wrappers' inner names dropped."""
    return key.replace(".base_layer", "").replace(".original_module", "")


def _digest(weight: torch.Tensor) -> dict[str, object]:
    """sha256 of the tensor's bytes as stored (any shape, any dtype), with its dtype and shape."""
    data = weight.detach().to("cpu").contiguous()
    return {"sha256": hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest(),
            "dtype": str(data.dtype).removeprefix("torch."), "shape": list(data.shape)}


def _depended_on(model: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """Base path -> (kind, weight): the embedding layers, then the float base weight of each LoRA layer."""
    out: dict[str, tuple[str, torch.Tensor]] = {}
    if hasattr(model, "get_input_embeddings"):
        layers = [model.get_input_embeddings(), model.get_output_embeddings()]
        plain = [_base(layer) for layer in layers if layer is not None]
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if any(module is layer for layer in plain) and isinstance(weight, torch.Tensor) and not weight.is_meta:
                out[_path(name)] = ("embedding", module.weight)
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or module.merged_adapters or is_quantized(module.base_layer):
            continue  # a merged layer's weight holds the update: its base is not recorded (nor is a quantized one's)
        weight = getattr(module.base_layer, "weight", None)
        if isinstance(weight, torch.Tensor) and not weight.is_meta:
            out.setdefault(_path(name), ("weight", weight))
    return out


def dependencies(model: nn.Module) -> dict[str, dict[str, object]]:
    """What the adapters of ``model`` depend on: module path -> ``{"kind", "sha256", "dtype", "shape"}``.

    ``kind`` is ``embedding`` (input and output embeddings, all rows) or ``weight`` (an adapted layer's base
    weight, as stored: a float base; a merged or quantized layer is left out). Paths are the bare base's
    (``model.layers.0.self_attn.q_proj``, not ``...q_proj.base_layer``), so they are found on a model that has no
    adapter yet.
    """
    return {path: {"kind": kind, **_digest(w)} for path, (kind, w) in _depended_on(model).items()}


def check_dependencies(model: nn.Module, recorded: dict[str, dict[str, object]], carried: set[str],
                       where: Path) -> None:
    """Compare the base ``model`` with the digests an adapter was saved with (:func:`dependencies`).

    A layer whose tensor the folder carries (``carried``: bare paths, e.g. the resized embeddings) is restored by
    loading and not compared; nor is one whose dtype or shape differs (a bf16 base under an fp32 adapter is the
    same base rounded), nor one missing from the model (strict loading names it).

    Raises:
        HfxError: the embedding rows differ (the adapter would read other token vectors), naming the layer.

    Warns:
        UserWarning: the base weight of an adapted layer differs (another checkpoint), naming the first and the
            count; peft loads either silently.
    """
    differ: dict[str, list[str]] = {"embedding": [], "weight": []}
    for path, saved in recorded.items():
        try:
            wrapper = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(wrapper, LoraLayer) and wrapper.merged_adapters:
            continue  # an adapter already merged into this base weight (loading a second adapter)
        module = _base(wrapper)
        weight = getattr(module, "weight", None)
        if path in carried or is_quantized(module) or not isinstance(weight, torch.Tensor) or weight.is_meta:
            continue
        now = _digest(weight)
        if now["dtype"] == saved["dtype"] and now["shape"] == saved["shape"] and now["sha256"] != saved["sha256"]:
            differ[str(saved["kind"])].append(path)
    if differ["embedding"]:
        raise HfxError(f"{where}: the embedding rows of {differ['embedding'][0]} differ from those the adapter was "
                       "trained with (sha256 in hfx_lora.json; same shape, other values: e.g. new tokens drawn "
                       "anew); load onto the model the adapter was saved from")
    if differ["weight"]:
        warnings.warn(f"{where}: the base weight of {differ['weight'][0]} differs from the one the adapter was trained "
                      f"on ({len(differ['weight'])} of {sum(v['kind'] == 'weight' for v in recorded.values())} "
                      "adapted layers differ): is this the base the adapter was saved from?", UserWarning, stacklevel=3)
