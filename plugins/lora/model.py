"""The user-facing operations on a model carrying LoRA adapters.

The model stays the transformers model it was (``hfx.apply`` swaps layers in place, nothing wraps it), so
these are functions taking the model, the counterparts of peft's ``PeftModel`` methods::

    add_adapter(model, cfg)   # in apply.py      set_adapter(model, "b")
    with disable_adapters(model): ...            # the frozen base, e.g. PPO's reference model, no copy
    merge_adapter(model); unmerge_adapter(model) base = merge_and_unload(model)   # a plain model again

The configs of the adapters are kept on the model as ``model.hfx_lora`` (a plain attribute: not a module,
not in the state_dict).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from hfx.errors import HfxError
from hfx.protocols import forget
from hfx.sharing import check_not_shared
from hfx_plugins.lora.config import LoraConfig
from hfx_plugins.lora.layer import LoraLayer
from hfx_plugins.lora.trainable import ModulesToSave, lora_layers, mark_trainable, saved_modules

__all__ = [
    "LoraState", "delete_adapter", "disable_adapters", "get_state", "keep_state", "merge_adapter",
    "merge_and_unload", "set_adapter", "state_or_new", "unload", "unmerge_adapter",
]

_ATTR = "hfx_lora"


@dataclass
class LoraState:
    """The adapters on one model: their configs (in the order added) and which are active."""

    configs: dict[str, LoraConfig] = field(default_factory=dict)
    active: list[str] = field(default_factory=list)


def get_state(model: nn.Module) -> LoraState:
    """The LoRA state of ``model`` (its adapters' configs and the active ones).

    Raises:
        HfxError: the model has no adapter.
    """
    state = getattr(model, _ATTR, None)
    if state is None or not state.configs:
        if any(True for _ in lora_layers(model)):  # the adapters' layers, under a head that wrapped the model
            raise HfxError(f"this {type(model).__name__} wraps the model LoRA was applied to, and its adapters' "
                           "configs stay on that model; save or change the adapters through it, before wrapping")
        raise HfxError(f"{type(model).__name__} has no LoRA adapter; apply one first with hfx.apply(model, 'lora', ...)")
    return state


def _check_name(state: LoraState, names: list[str]) -> None:
    for name in names:
        if name not in state.configs:
            raise HfxError(f"no adapter named {name!r} on this model; adapters: {', '.join(state.configs)}")


def state_or_new(model: nn.Module) -> LoraState:
    """The adapters' state on ``model``, or a new empty one (not attached: :func:`keep_state` does that)."""
    return getattr(model, _ATTR, None) or LoraState()


def keep_state(model: nn.Module, state: LoraState) -> None:
    """Attach ``state`` to ``model`` (a plain attribute: not a module, not in the state_dict)."""
    object.__setattr__(model, _ATTR, state)


def set_adapter(model: nn.Module, names: str | list[str]) -> None:
    """Make ``names`` the active adapters (used in forward, and the only trainable ones)."""
    state = get_state(model)
    names = [names] if isinstance(names, str) else list(names)
    _check_name(state, names)
    state.active = names
    for wrapper in [*lora_layers(model), *saved_modules(model)]:
        wrapper.active_adapters = [n for n in names if n in wrapper.adapters]
    mark_trainable(model, state.configs[names[0]].bias if names else "none")


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model computes as its base: adapters and modules_to_save copies are bypassed.

    Merged adapters are taken out of the weights on entry (peft unmerges silently and leaves the adapter
    unmerged). On exit every layer gets back exactly what the block found, its disabled flag and its merged
    adapters, so blocks nest: an inner block leaves the outer one disabled (peft's ``disable_adapter``
    re-enables on the inner exit what the outer block disabled), and a merge made inside the block is undone.

    The adapters are found by their layers, so the block works on whatever holds them: the adapted model, or a
    head or an embedder wrapped around it (``hfx.apply(model, "reward")`` after ``"lora"``), which does not
    carry the adapters' configs.

    Raises:
        HfxError: the model has no adapter.
    """
    layers = list(lora_layers(model))
    if not layers:
        get_state(model)  # raises: no adapter at all
    wrappers: list[LoraLayer | ModulesToSave] = [*layers, *saved_modules(model)]
    found_disabled = [w.disabled for w in wrappers]
    found_merged = [list(layer.merged_adapters) for layer in layers]
    for layer in layers:
        layer.unmerge()
    for w in wrappers:
        w.disabled = True
    try:
        yield model
    finally:
        for w, disabled in zip(wrappers, found_disabled, strict=True):
            w.disabled = disabled
        for layer, names in zip(layers, found_merged, strict=True):
            if layer.merged_adapters != names:
                layer.unmerge()
                if names:
                    layer.merge(names)


def merge_adapter(model: nn.Module, adapter_names: list[str] | None = None,
                  safe_merge: bool = False) -> list[dict[str, float | str]]:
    """Add the adapters (default: the active ones) into the base weights; forward is then the plain model's cost.

    A quantized base (QLoRA, ``plugin=[quant,lora]``) is merged by ``hfx.protocols.fold_update``: a new base
    layer requantized in the base's own format, the original kept for :func:`unmerge_adapter` (see
    ``LoraLayer.merge``).

    Args:
        model: A model carrying LoRA adapters.
        adapter_names: Adapters to merge; default: the active ones.
        safe_merge: Check the merged weights for NaN/inf first.

    Returns:
        One report row per layer whose base is quantized: ``layer``, ``update_norm`` ||s B A||_F,
        ``merge_error`` ||W'_stored - (W + s B A)||_F (the rounding the requantization added), ``max_error``,
        ``error_vs_update`` and ``adapters``; [] when every base is float.

    Raises:
        HfxError: the model has no adapter, an unknown adapter name, an adapter already merged, NaN/inf with
            ``safe_merge``, a DoRA adapter on a quantized base, or a base weight shared with another module
            (an output layer tied to the embeddings; :mod:`hfx.sharing`).
    """
    state = get_state(model)
    names = state.active if adapter_names is None else list(adapter_names)
    _check_name(state, names)
    for layer in lora_layers(model):
        twice = [n for n in names if n in layer.merged_adapters]
        if twice:
            raise HfxError(f"adapter {twice[0]!r} is already merged (merge_adapter was called twice); "
                           "call unmerge_adapter(model) first")
    merging = [f"{key}.base_layer.weight" for key, m in model.named_modules()
               if isinstance(m, LoraLayer) and any(n in m.adapters for n in names)]
    check_not_shared(model, merging, "merge LoRA into",
                     "keep the adapter unmerged, or untie first (model.config.tie_word_embeddings=False and give the "
                     "layer its own copy: layer.weight = nn.Parameter(layer.weight.detach().clone()))")
    reports: list[dict[str, float | str]] = []
    for layer in lora_layers(model):
        reports += layer.merge([n for n in names if n in layer.adapters], safe=safe_merge)
    return reports


def unmerge_adapter(model: nn.Module) -> None:
    """Take every merged adapter back out of the base weights."""
    for layer in lora_layers(model):
        layer.unmerge()


def _strip(model: nn.Module, merge: bool, adapter_names: list[str] | None, safe_merge: bool) -> nn.Module:
    state = get_state(model)
    names = state.active if adapter_names is None else list(adapter_names)
    _check_name(state, names)
    layers = list(lora_layers(model))
    # An earlier merge_adapter of exactly these adapters is kept (its reports describe this model); any other
    # merged state is taken out first.
    kept = merge and all(sorted(m.merged_adapters) == sorted(n for n in names if n in m.adapters) for m in layers)
    if not kept:
        unmerge_adapter(model)
        if merge:
            merge_adapter(model, names, safe_merge)
    for key, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            new = module.base_layer
        elif isinstance(module, ModulesToSave):
            # merged: keep the trained copy of the active adapter; unloaded: the original
            new = module.current() if merge else module.original_module
        else:
            continue
        parent, _, child = key.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    for p in model.parameters():
        p.requires_grad_(True)  # a plain transformers model again, as from_pretrained gives it
    state.configs.clear()
    object.__delattr__(model, _ATTR)
    forget(model, "lora")  # hfx.save now writes the whole model
    return model


def merge_and_unload(model: nn.Module, adapter_names: list[str] | None = None, safe_merge: bool = False) -> nn.Module:
    """Merge the adapters (default: the active ones) and remove every LoRA layer: a plain transformers model.

    Returns the model, as peft's ``merge_and_unload`` does. On a quantized base the merge requantizes; to
    keep its per-layer error reports, call :func:`merge_adapter` first (it returns them) and this afterwards:
    a merge of exactly the requested adapters is kept as it is, not redone::

        reports = merge_adapter(model)     # QLoRA: one row per layer, what requantizing cost
        model = merge_and_unload(model)    # the same merged layers, unwrapped

    Raises:
        HfxError: as :func:`merge_adapter`.
    """
    return _strip(model, True, adapter_names, safe_merge)


def unload(model: nn.Module) -> nn.Module:
    """Remove every LoRA layer without merging: the base model back."""
    return _strip(model, False, None, False)


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name`` (which must not be merged) from every layer."""
    state = get_state(model)
    _check_name(state, [name])
    if list(state.configs) == [name]:
        unload(model)
        return
    for wrapper in [*lora_layers(model), *saved_modules(model)]:
        wrapper.delete_adapter(name)
    del state.configs[name]
    _unwrap_empty(model)
    remaining = [n for n in state.active if n != name]
    set_adapter(model, remaining or [next(iter(state.configs))])


def _unwrap_empty(model: nn.Module) -> None:
    """Put back the original layer wherever no adapter is left."""
    for key, module in list(model.named_modules()):
        if isinstance(module, LoraLayer) and not module.adapters:
            new = module.base_layer
        elif isinstance(module, ModulesToSave) and not module.adapters:
            new = module.original_module
        else:
            continue
        parent, _, child = key.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
