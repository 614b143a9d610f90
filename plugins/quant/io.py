"""Saving and loading a quantized model: safetensors only, packed codes as they are in memory.

A folder written by :func:`save` holds

- ``model.safetensors``: the whole state dict (packed uint8 codes, fp16 scales, uint8 zero points of the
  quantized layers, and every other weight), each tied tensor stored once (metadata ``{"format": "pt"}``);
- ``hfx_quant.json``: the plugin config, every quantized layer's shape and layout, every quantized fused expert
  weight's (``experts``: :mod:`.experts`), and the tied names;
- ``config.json``: the transformers config, so :func:`load_quantized` rebuilds the model from the folder alone.

:func:`load` restores onto a base model: it swaps the recorded layers for empty :class:`QuantLinear` and
loads the tensors with ``assign=True``, so a base built on the meta device (``accelerate.init_empty_weights``)
never holds the fp32 weights: that is what makes loading a 4-bit model take less memory than fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from hfx.errors import HfxError
from hfx.io import config_marker, has_config_marker, load_safetensors, read_config_marker, write_config_marker
from hfx.protocols import base_path, base_state_dict, config_of, record
from hfx_plugins.quant.apply import check_not_quantized, quantized_layers, set_module
from hfx_plugins.quant.config import QuantConfig
from hfx_plugins.quant.experts import SUFFIX, PackedExperts, install_packed, packed_experts
from hfx_plugins.quant.layer import QuantLinear

__all__ = ["MARKER", "WEIGHTS", "can_load", "load", "load_quantized", "save"]

MARKER = config_marker("quant")
WEIGHTS = "model.safetensors"
_RENAMED = {"symmetric": "sym", "damp": "damp_percent"}  # config keys of earlier hfx versions


def _dedup(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop every tensor that shares storage with an earlier one; return ``(kept, {dropped: kept name})``."""
    kept: dict[str, torch.Tensor] = {}
    owner: dict[tuple[int, int, tuple[int, ...]], str] = {}
    tied: dict[str, str] = {}
    for k, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in owner and t.device.type != "meta":
            tied[k] = owner[key]
        else:
            owner[key] = k
            kept[k] = t.contiguous()
    return kept, tied


def save(model: nn.Module, path: Path, cfg: QuantConfig | None = None) -> None:
    """Write the quantized ``model`` to ``path`` (see the module docstring).

    Under a wrapping plugin (``plugin=[quant,lora]``) the base is written as it was before wrapping (the
    adapters are the wrapping plugin's to save): names and tensors come from ``hfx.protocols.base_state_dict``.

    Raises:
        HfxError: the model has no quantized layer.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    layers, experts = quantized_layers(model), packed_experts(model)
    if not layers and not experts:
        raise HfxError("the model has no quantized layer to save; apply the quant plugin first")
    cfg = cfg or config_of(model, "quant") or QuantConfig()
    state = base_state_dict(model)
    kept, tied = _dedup(state)
    save_file(kept, str(path / WEIGHTS), metadata={"format": "pt"})
    spec = {n: {"in_features": m.in_features, "out_features": m.out_features, "bits": m.bits,
                "group_size": m.group_size, "symmetric": m.symmetric, "bias": m.bias is not None,
                "act_mode": m.act_mode} for n, m in ((base_path(n), m) for n, m in layers.items())}
    if hasattr(model, "config") and hasattr(model.config, "to_json_file"):
        model.config.to_json_file(str(path / "config.json"))
    # QuantConfig's fields only: a run's section (QuantRunConfig) also holds the recipe's table settings
    fused = {base_path(n)[: -len(SUFFIX)]: m.spec() for n, m in experts.items()}  # "...experts.gate_up_proj"
    write_config_marker(path, "quant", cfg, QuantConfig, layers=spec, tied=tied, experts=fused)


def can_load(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save` (it holds ``hfx_quant.json``)."""
    return has_config_marker(path, "quant")


def load(model: nn.Module, path: Path) -> tuple[nn.Module, QuantConfig]:
    """Swap in the recorded quantized layers on ``model`` and load every tensor from ``path``.

    Args:
        model: The full-precision base model the quantized one was made from (it may be on the meta device).
        path: A folder written by :func:`save`.

    Returns:
        ``model`` with :class:`QuantLinear` layers, in eval mode, and the :class:`QuantConfig` it was saved with.

    Raises:
        HfxError: the model is already quantized, lacks a recorded layer, or a tensor's shape, a missing or an
            unexpected key shows that it is not the architecture the folder was saved from.
    """
    path = Path(path)
    # Folders written before the run-only fields moved out and before the GPTQConfig names: kept readable.
    cfg, meta = read_config_marker(path, "quant", QuantConfig, renamed=_RENAMED)
    check_not_quantized(model)
    for name, spec in meta["layers"].items():
        try:
            model.get_submodule(name)
        except AttributeError:
            raise HfxError(f"{path} holds a quantized layer {name!r} that the model lacks; "
                           "load onto the same architecture it was saved from") from None
        set_module(model, name, QuantLinear(**spec))
    for name, spec in meta.get("experts", {}).items():  # fused 3-D expert weights (.experts)
        mod, _, param = name.rpartition(".")
        try:
            module = model.get_submodule(mod)
        except AttributeError:
            module = None
        if module is None or not isinstance(getattr(module, param, None), torch.Tensor):
            raise HfxError(f"{path} holds quantized fused experts {name!r} that the model lacks; "
                           "load onto the same architecture it was saved from")
        install_packed(module, param, PackedExperts(**spec))
    weights = load_safetensors(path / WEIGHTS)
    own = model.state_dict()
    for k, t in weights.items():
        if k in own and own[k].shape != t.shape:
            raise HfxError(f"{k}: saved shape {tuple(t.shape)} does not fit the model's {tuple(own[k].shape)}; "
                           "load onto the base model the quantized model was made from")
    result = model.load_state_dict(weights, strict=False, assign=True)
    for k, src in meta["tied"].items():  # re-point each tied name at the tensor it shares
        mod, _, attr = k.rpartition(".")
        smod, _, sattr = src.rpartition(".")
        setattr(model.get_submodule(mod), attr, getattr(model.get_submodule(smod), sattr))
    missing = [k for k in result.missing_keys if k not in meta["tied"]]
    if missing or result.unexpected_keys:
        raise HfxError(f"{path} does not fit {type(model).__name__}: missing {missing[:4]}, "
                       f"unexpected {result.unexpected_keys[:4]}; load onto the base model it was made from")
    model.eval()
    return model, cfg


def load_quantized(path: str | Path, **model_kwargs: Any) -> nn.Module:
    """Build the model from ``path/config.json`` on the meta device and load the quantized weights into it.

    No full-precision copy of the weights is ever made. Remote code is never run. The model's record of
    applied plugins (``hfx.protocols.applied``) gets the ``quant`` entry, so ``hfx.save`` writes it again.

    Args:
        path: A folder written by :func:`save` for a transformers model (with its ``config.json``).
        **model_kwargs: Passed to the architecture's constructor.

    Raises:
        HfxError: the folder is not such a folder, or its config names no transformers architecture; and
            what :func:`load` raises.
    """
    import transformers
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    path = Path(path)
    if not can_load(path) or not (path / "config.json").is_file():
        raise HfxError(f"{path} is not a folder written by hfx.save for a quantized transformers model")
    config = AutoConfig.from_pretrained(path)
    arch = (config.architectures or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise HfxError(f"config.json in {path} names no transformers architecture ({arch!r}); use hfx.load on a base model")
    with init_empty_weights():  # parameters on the meta device, buffers (e.g. rotary tables) real
        model = cls(config, **model_kwargs)
    model, cfg = load(model, path)
    record(model, "quant", cfg)
    return model
