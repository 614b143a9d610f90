"""How plugins meet: the small protocol through which composing plugins work together.

No plugin imports another plugin's internals. Where two plugins compose, they meet here:

- **Wrapped base layers.** A layer that wraps another one (a LoRA adapter, DoRA's magnitude, a prefix)
  never asks what class its base is. It asks the base, through :func:`effective_weight`,
  :func:`is_quantized` and :func:`fold_update`, for its weight as a float matrix, whether that weight is
  stored quantized, and to fold an update into it. A plain ``nn.Linear`` (or GPT-2's ``Conv1D``) answers
  with its own weight; a layer of a quantization plugin implements :class:`FoldableBase` (a dequantized
  weight, and a requantized copy with the update folded in plus a report of the rounding error it added).
- **Wrapping layers** hold the layer they wrap as their ``base_layer`` submodule (peft's convention). A plugin
  that saves or selects base layers (quant) reads the model as it was before wrapping through
  :func:`base_path`, :func:`base_named_modules` and :func:`base_state_dict`, never by the wrapper's class.
- **The applied-plugins record.** Each model carries the list of ``(plugin name, config)`` applied to it, in
  order; :func:`hfx.save` reads it to know what to write. It is read with :func:`applied` and written only
  with :func:`record` and :func:`forget`, never by setting the attribute.

Plugins that truly build on another (qat converts to quant's packed layers) declare it in
``Plugin.requires`` and import only that plugin's public names (its package's ``__all__``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "WRAPPED",
    "FoldReport",
    "FoldableBase",
    "applied",
    "base_named_modules",
    "base_path",
    "base_state_dict",
    "effective_weight",
    "fold_update",
    "forget",
    "is_quantized",
    "record",
]

_ATTR = "hfx_plugins"
WRAPPED = "base_layer"
"""The attribute under which a wrapping layer holds the layer it wraps (peft's name)."""


# ---------------------------------------------------------------------------------------------------------
# The applied-plugins record
# ---------------------------------------------------------------------------------------------------------

def applied(model: nn.Module) -> list[tuple[str, Any]]:
    """The ``(plugin name, config)`` pairs applied to ``model``, in order (a copy; empty when none)."""
    return list(getattr(model, _ATTR, []))


def config_of(model: nn.Module, name: str) -> Any | None:
    """The config the first application of plugin ``name`` to ``model`` was recorded with, or None."""
    return next((cfg for n, cfg in applied(model) if n == name), None)


def record(model: nn.Module, name: str, cfg: Any, replace: bool = False) -> None:
    """Append ``(name, cfg)`` to ``model``'s record of applied plugins.

    Args:
        model: The model the plugin was applied to.
        name: The plugin's name.
        cfg: Its config object (what :func:`hfx.save` hands back to the plugin's ``save``).
        replace: Drop earlier entries of ``name`` first (a plugin whose ``save`` writes every application at
            once, such as several named LoRA adapters, is recorded once).
    """
    kept = [(n, c) for n, c in applied(model) if not (replace and n == name)]
    # A plain list attribute: nn.Module keeps it out of state_dict() and parameters().
    object.__setattr__(model, _ATTR, [*kept, (name, cfg)])


def forget(model: nn.Module, name: str) -> None:
    """Remove every entry of plugin ``name`` from ``model``'s record (e.g. after unloading its layers)."""
    object.__setattr__(model, _ATTR, [(n, c) for n, c in applied(model) if n != name])


# ---------------------------------------------------------------------------------------------------------
# Wrapped base layers
# ---------------------------------------------------------------------------------------------------------

@dataclass
class FoldReport:
    """What folding an update ``delta`` into a base layer's weight cost.

    Attributes:
        layer: Dotted path of the layer ("" when unknown).
        update_norm: ||delta||_F.
        merge_error: ||W'_stored - (W + delta)||_F, the rounding error the storage format added (0 for float).
        max_error: max |W'_stored - (W + delta)|.
    """

    layer: str
    update_norm: float
    merge_error: float
    max_error: float

    @property
    def error_vs_update(self) -> float:
        """merge_error / update_norm (inf when the update is zero but the error is not)."""
        if self.update_norm > 0:
            return self.merge_error / self.update_norm
        return float("inf") if self.merge_error > 0 else 0.0

    def as_row(self) -> dict[str, float | str]:
        """The report as one table row (``layer``, norms, ``error_vs_update``)."""
        return {"layer": self.layer, "update_norm": self.update_norm, "merge_error": self.merge_error,
                "max_error": self.max_error, "error_vs_update": self.error_vs_update}


@runtime_checkable
class FoldableBase(Protocol):
    """A base layer whose weight is not a plain float ``weight`` parameter (e.g. packed integers).

    Implemented by a quantization plugin's layer; a wrapping plugin reaches it only through
    :func:`effective_weight`, :func:`is_quantized` and :func:`fold_update`.
    """

    in_features: int
    out_features: int

    def effective_weight(self) -> torch.Tensor:
        """The weight the layer computes with, as float32 of shape (out_features, in_features)."""
        ...

    def with_update(self, delta: torch.Tensor, name: str = "") -> tuple[nn.Module, FoldReport]:
        """A new layer of the same kind and layout storing W + delta (delta: (out, in)), and its report.

        The layer itself is left unchanged, so that the caller can restore it exactly (unmerge).
        """
        ...


def is_quantized(layer: nn.Module) -> bool:
    """Whether ``layer`` stores its weight in a form that cannot be written in place (a :class:`FoldableBase`)."""
    return isinstance(layer, FoldableBase)


def effective_weight(layer: nn.Module) -> torch.Tensor:
    """The weight ``layer`` computes with, shape (out_features, in_features).

    A :class:`FoldableBase` returns its dequantized weight (float32, a new tensor); a float layer returns its
    ``weight`` parameter itself (GPT-2's ``Conv1D`` stores (in, out): it is transposed, a view).

    Raises:
        TypeError: the layer has neither protocol methods nor a ``weight``.
    """
    if isinstance(layer, FoldableBase):
        return layer.effective_weight()
    weight = getattr(layer, "weight", None)
    if weight is None:
        raise TypeError(f"{type(layer).__name__} has no weight and does not implement hfx.protocols.FoldableBase")
    # transformers' Conv1D (GPT-2) stores (in, out) and has `nf` = out features.
    return weight.T if hasattr(layer, "nf") else weight


def fold_update(layer: nn.Module, delta: torch.Tensor, name: str = "") -> tuple[nn.Module, FoldReport]:
    """Fold ``delta`` (out, in) into ``layer``'s weight; return the layer to use from now on and the report.

    A float layer is changed in place (W += delta, in W's dtype; for ``Conv1D`` delta is transposed) and
    returned, with the rounding error of that dtype reported. A :class:`FoldableBase` is left untouched and a
    new layer holding W + delta in its own storage format is returned (a quantized base requantizes, and the
    report says how much error that added), so the caller can swap it in and later swap the original back.
    """
    import torch

    if isinstance(layer, FoldableBase):
        return layer.with_update(delta, name=name)
    with torch.no_grad():
        w = effective_weight(layer)  # (out, in), possibly a transposed view of the parameter
        target = w.float() + delta.float()
        w.add_(delta.to(w.dtype))
        diff = w.float() - target
    report = FoldReport(name, delta.float().norm().item(), diff.norm().item(),
                        diff.abs().max().item() if diff.numel() else 0.0)
    return layer, report


# ---------------------------------------------------------------------------------------------------------
# The model as it was before wrapping
# ---------------------------------------------------------------------------------------------------------

def _wrappers(model: nn.Module) -> set[str]:
    """Paths of the modules that hold a wrapped layer as their :data:`WRAPPED` submodule."""
    from torch import nn

    return {n for n, m in model.named_modules() if isinstance(getattr(m, WRAPPED, None), nn.Module)}


def _unwrap(path: str, wrappers: set[str]) -> str | None:
    """``path`` in the unwrapped model, or None when it lies in a wrapper but outside its base (an adapter)."""
    seen, kept = "", []
    for part in path.split(".") if path else []:
        if seen in wrappers:
            if part != WRAPPED:
                return None
            seen = f"{seen}.{part}" if seen else part
            continue
        seen = f"{seen}.{part}" if seen else part
        kept.append(part)
    return ".".join(kept)


def base_path(path: str) -> str:
    """The dotted path a layer had before wrapping: ``"...q_proj.base_layer"`` -> ``"...q_proj"``."""
    return ".".join(p for p in path.split(".") if p != WRAPPED)


def base_named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model.named_modules()`` without what wrapping layers added: the wrappers themselves and their adapters.

    Paths are the real ones (``"...q_proj.base_layer"`` under a wrapper), so that the caller can replace the
    module there; :func:`base_path` gives the name it had before wrapping.
    """
    wrappers = _wrappers(model)
    return [(n, m) for n, m in model.named_modules() if n not in wrappers and _unwrap(n, wrappers) is not None]


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as the unwrapped model would give it: adapters left out, base tensors renamed.

    ``"...q_proj.base_layer.weight"`` becomes ``"...q_proj.weight"`` and ``"...q_proj.lora_A.default.weight"``
    is dropped, so that what a plugin saves of the base loads onto a model that was never wrapped.
    """
    wrappers = _wrappers(model)
    out = {}
    for key, tensor in model.state_dict().items():
        name = _unwrap(key, wrappers)
        if name is not None:
            out[name] = tensor
    return out
