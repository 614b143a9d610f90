"""Weights shared between modules: find them before an operation that would change one copy only.

transformers ties the output layer to the input embeddings (``tie_word_embeddings``: one tensor under two
names), and some models reuse one layer in several places. Merging an update into, quantizing, or
replacing one of the sharers changes (or unties) the other silently: a LoRA update merged into a tied
``lm_head`` also lands in the input embeddings. Plugins ask here first and refuse with both names.
"""

from __future__ import annotations

from torch import nn

from hfx.errors import HfxError

__all__ = ["check_not_shared", "parameter_owners", "shared_with"]


def parameter_owners(model: nn.Module) -> dict[int, list[str]]:
    """Every parameter's names in ``model``, by tensor identity (a tied tensor lists two or more names)."""
    owners: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for p_name, p in mod.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if name not in owners.setdefault(id(p), []):
                owners[id(p)].append(name)
    return owners


def shared_with(model: nn.Module, name: str, owners: dict[int, list[str]] | None = None) -> list[str]:
    """The other names of the parameter ``name`` (a dotted path such as ``lm_head.weight``); [] if not shared."""
    owners = parameter_owners(model) if owners is None else owners
    mod_name, _, p_name = name.rpartition(".")
    p = getattr(model.get_submodule(mod_name) if mod_name else model, p_name, None)
    if not isinstance(p, nn.Parameter):
        return []
    return [n for n in owners.get(id(p), []) if n != name]


def check_not_shared(model: nn.Module, names: list[str], action: str, fix: str) -> None:
    """Raise if a parameter in ``names`` is shared with another module.

    Args:
        model: The model holding the parameters.
        names: Dotted parameter paths the operation would change (``lm_head.base_layer.weight``).
        action: What would be done, for the message ("merge LoRA into", "quantize").
        fix: What to do instead, appended to the message.

    Raises:
        HfxError: naming the parameter and the module that shares it.
    """
    owners = parameter_owners(model)
    for name in names:
        others = shared_with(model, name, owners)
        if others:
            raise HfxError(f"cannot {action} {name!r}: the tensor is shared with {others[0]!r} (tied weights), which "
                           f"would change too; {fix}")
