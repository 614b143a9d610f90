"""What trains besides the adapters: ``modules_to_save`` copies and biases; and counting parameters.

A module in ``modules_to_save`` (e.g. a new classification head) is trained in full. As in peft, it is wrapped:
the original stays untouched and each adapter trains its own copy, so switching or disabling adapters also
switches the head back (the frozen base really is the base). Keys follow peft:
``classifier.original_module.weight`` and ``classifier.modules_to_save.<adapter>.weight``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from torch import nn

from hfx_plugins.lora.layer import LoraLayer

__all__ = ["ModulesToSave", "lora_layers", "mark_trainable", "parameter_counts", "saved_modules", "selects_to_save"]


def selects_to_save(names: list[str], key: str) -> bool:
    """Whether ``modules_to_save`` ``names`` select the module at path ``key``: peft's rule, ``key.endswith(name)``.

    A plain string suffix, as peft's ``_set_trainable`` (``peft.utils.other``) matches, so ``classifier`` also
    selects DistilBERT's ``pre_classifier``, and peft, reading the name back, expects both copies in the file.
    peft's rule for ``target_modules`` (``check_target_module_exists``) needs a dot boundary instead.
    """
    return any(key.endswith(name) for name in names)


class ModulesToSave(nn.Module):
    """A module trained in full: one copy per adapter; the original is used when none of them is active."""

    def __init__(self, original: nn.Module, path: str) -> None:
        super().__init__()
        self.original_module = original
        self.modules_to_save = nn.ModuleDict()
        self.path = path
        self.active_adapters: list[str] = []
        self.disabled = False

    def add_adapter(self, name: str) -> None:
        """Add a trainable copy of the wrapped module for ``name`` (peft's ``ModulesToSaveWrapper``)."""
        self.modules_to_save[name] = copy.deepcopy(self.original_module)

    @property
    def adapters(self) -> list[str]:
        """Names of the adapters that have their own copy, in the order they were added."""
        return list(self.modules_to_save)

    def current(self) -> nn.Module:
        """The module forward uses: the first active adapter's copy, else the original."""
        if self.disabled or not self.active_adapters:
            return self.original_module
        return self.modules_to_save[self.active_adapters[0]]

    def set_active(self, names: list[str]) -> None:
        """Make ``names`` active; the first one's copy is used and trains (peft uses one at a time)."""
        self.active_adapters = [n for n in names if n in self.modules_to_save]
        for p in self.original_module.parameters():
            p.requires_grad_(False)
        for name, module in self.modules_to_save.items():
            for p in module.parameters():
                p.requires_grad_(name in self.active_adapters[:1])

    def delete_adapter(self, name: str) -> None:
        """Drop adapter ``name``'s copy (nothing happens for an unknown name)."""
        if name in self.modules_to_save:
            del self.modules_to_save[name]
        self.active_adapters = [n for n in self.active_adapters if n != name]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module in use (:meth:`current`) called on the same arguments; its output unchanged."""
        return self.current()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Model code may read e.g. `self.classifier.out_proj` or `.weight`: answer from the module in use.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("original_module", "modules_to_save"):
                raise
            return getattr(self.current(), name)


def lora_layers(model: nn.Module) -> Iterator[LoraLayer]:
    """Every LoRA layer of ``model``."""
    return (m for m in model.modules() if isinstance(m, LoraLayer))


def saved_modules(model: nn.Module) -> Iterator[ModulesToSave]:
    """Every ``modules_to_save`` wrapper of ``model``."""
    return (m for m in model.modules() if isinstance(m, ModulesToSave))


def mark_trainable(model: nn.Module, bias: str) -> None:
    """Freeze everything, then unfreeze the active adapters, their modules_to_save copies and the biases asked for.

    ``bias="all"`` unfreezes every parameter named ``*.bias`` and ``"lora_only"`` the biases of adapted layers,
    as peft does (peft's count for "all" therefore includes biases of wrapped originals; so does this one).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for wrapper in [*lora_layers(model), *saved_modules(model)]:
        wrapper.set_active(wrapper.active_adapters)
    if bias == "all":
        for name, p in model.named_parameters():
            if name == "bias" or name.endswith(".bias"):
                p.requires_grad_(True)
    elif bias == "lora_only":
        for layer in lora_layers(model):
            if layer.bias is not None:
                layer.bias.requires_grad_(True)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; shared (tied) tensors count once, as in peft."""
    trainable = total = 0
    for p in model.parameters():  # parameters() yields a tied tensor once
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
