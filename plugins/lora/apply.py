"""``hfx.apply(model, "lora", ...)``: add a LoRA adapter to a model and make it the active one."""

from __future__ import annotations

import dataclasses

from torch import nn

from hfx.errors import HfxError
from hfx_plugins.lora.config import LoraConfig
from hfx_plugins.lora.inject import inject, modules_to_save_paths, wrap_modules_to_save
from hfx_plugins.lora.layer import LoraLayer
from hfx_plugins.lora.model import keep_state, set_adapter, state_or_new

__all__ = ["add_adapter", "apply"]

_HEADS = ("classifier", "score")  # the head names peft adds to modules_to_save for SEQ_CLS


def _auto_modules_to_save(model: nn.Module, cfg: LoraConfig) -> list[str] | None:
    """A sequence classifier's new head must train in full: add it to modules_to_save, as peft does for SEQ_CLS."""
    is_classifier = type(model).__name__.endswith("ForSequenceClassification") or cfg.task_type == "SEQ_CLS"
    heads = [h for h in _HEADS if isinstance(getattr(model, h, None), nn.Module)] if is_classifier else []
    extra = [h for h in heads if h not in (cfg.modules_to_save or [])]
    return [*(cfg.modules_to_save or []), *extra] or None


def add_adapter(model: nn.Module, cfg: LoraConfig, *, activate: bool = True) -> nn.Module:
    """Inject adapter ``cfg.adapter_name`` and (by default) make it the one active, trainable adapter; return ``model``.

    ``hfx.apply(model, "lora", ...)`` is this function (:data:`apply`). Several named adapters may live on one
    model: ``hfx.save`` writes them all in peft's layout (the plugin is ``record_once``, so the model's record
    holds one lora entry whatever the number of adapters). Each targeted ``nn.Linear`` / ``Conv1D`` /
    ``nn.Embedding`` is wrapped once (:func:`hfx_plugins.lora.inject.inject`), and the adapter's A (r, in) and
    B (out, r) are built in the layer (:meth:`hfx_plugins.lora.layer.LoraLinear.add_adapter`), as peft's
    ``LoraModel.inject_adapter`` -> ``LoraLayer.update_layer`` do.

    Raises:
        HfxError: the adapter name is in use, ``modules_to_save`` names a missing module, or what
            :func:`hfx_plugins.lora.inject.resolve_targets` and the rank check raise; nothing is injected then.
    """
    state = state_or_new(model)
    name = cfg.adapter_name
    if name in state.configs:
        raise HfxError(f"adapter name {name!r} is already in use on this model (adapters: {', '.join(state.configs)}); "
                       "pass another adapter_name, or delete_adapter first")
    cfg = dataclasses.replace(cfg, modules_to_save=_auto_modules_to_save(model, cfg))
    if cfg.modules_to_save:
        modules_to_save_paths(model, cfg.modules_to_save)  # checked before the first layer is replaced
    targets = inject(model, cfg, name)
    if cfg.modules_to_save:
        wrap_modules_to_save(model, cfg.modules_to_save, name)
    # A Conv1D target means the (in, out) layout; peft records that as fan_in_fan_out=True in the config.
    fan_in = any(isinstance(m, LoraLayer) and getattr(m, "fan_in_fan_out", False) for m in
                 (model.get_submodule(k) for k in targets))
    state.configs[name] = dataclasses.replace(cfg, fan_in_fan_out=fan_in)
    keep_state(model, state)
    if activate or not state.active:
        set_adapter(model, name)
    else:
        set_adapter(model, state.active)
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5.x; older name below
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # the frozen embeddings would otherwise cut the checkpointed graph
    return model


apply = add_adapter  # the plugin's apply(model, cfg): hfx.apply calls add_adapter itself, with no layer between
