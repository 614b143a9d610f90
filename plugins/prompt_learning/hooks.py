"""The plumbing of the prompt-learning forward hooks, and the module each plugin adds to the model.

Both plugins leave the model a transformers model: they add one trainable module (``model.prefix_encoder`` or
``model.prompt_encoder``, found again with :func:`find_encoder`) and forward pre-hooks that rewrite the model's
inputs the way peft 0.21.2's ``PeftModelForCausalLM`` / ``PeftModelForSeq2SeqLM`` rewrite them
(``peft/peft_model.py``): positional arguments named (:func:`bind_inputs`), the KV cache under the name the
model takes (:func:`cache_argument`), the attention mask widened by the virtual tokens (:func:`extend_mask`).
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

import torch
from torch import nn

from hfx.errors import HfxError

__all__ = ["bind_inputs", "cache_argument", "extend_mask", "find_encoder"]

E = TypeVar("E", bound=nn.Module)


def find_encoder(model: nn.Module, attr: str, kind: type[E], plugin: str, what: str) -> E:
    """The module of type ``kind`` that ``hfx.apply(model, plugin)`` stored as ``model.<attr>``.

    Raises:
        HfxError: the model has none (``what`` names it: "prefix", "prompt").
    """
    enc = getattr(model, attr, None)
    if not isinstance(enc, kind):
        raise HfxError(f"{type(model).__name__} has no {what}; call hfx.apply(model, {plugin!r}, ...) first")
    return enc


def bind_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's positional arguments named after ``module.forward``'s parameters, merged into ``kwargs``."""
    if not args:
        return dict(kwargs)
    names = [n for n, p in inspect.signature(module.forward).parameters.items()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return {**dict(zip(names, args, strict=False)), **kwargs}


def cache_argument(module: nn.Module) -> str:
    """The name ``module.forward`` takes its KV cache under: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def extend_mask(mask: torch.Tensor | None, n: int, needed: int, what: str) -> torch.Tensor | None:
    """Prepend ``n`` ones to a 2-D mask that covers the real tokens only, so it covers ``needed`` positions.

    ``mask`` (B, needed - n) becomes (B, needed), as peft prepends ones for its virtual tokens. A mask that already covers ``needed`` positions is returned as is; None stays None (all attended).

    Raises:
        HfxError: a mask of any other length, or not 2-D (a 4-D mask cannot be extended safely).
    """
    if mask is None:
        return None
    if mask.dim() == 2 and mask.shape[1] == needed - n:
        return torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)  # (B, n + T)
    if mask.dim() == 2 and mask.shape[1] == needed:
        return mask
    raise HfxError(f"{what} has shape {tuple(mask.shape)}; expected (batch, {needed - n}) for the real tokens "
                   f"(the {n} virtual tokens are added by hfx) or (batch, {needed}); pass a 2-D mask")
