"""GPTQ's calibration inputs: what ``hfx.apply(..., calibration=...)`` accepts, and the Hessians they give.

H = 2 X^T X / n (in, in) of a linear layer is accumulated by a forward hook from the tokens x (in,) that reach
the layer (Frantar et al. 2022, https://arxiv.org/abs/2210.17323, section 3). Departure from the paper's
reference code (github.com/IST-DASLab/gptq): padding tokens are left out of H when a batch has an
``attention_mask`` (the reference counts them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from hfx.errors import HfxError

__all__ = ["Batch", "Calibration", "Hessians", "calibration_batches", "kept_tokens"]

Batch = dict[str, Any]
Calibration = torch.Tensor | Mapping[str, Any] | Iterable[torch.Tensor | Mapping[str, Any]]
"""What ``hfx.apply(model, "quant", method="gptq", calibration=...)`` accepts: a list of batches, each an
``input_ids`` tensor (B, T) or a mapping of model inputs (what a tokenizer returns with ``return_tensors="pt"``,
``attention_mask`` included); or one such mapping; or one (n, T) tensor, split into batches of 8 rows."""


def calibration_batches(calibration: Calibration, device: torch.device) -> list[Batch]:
    """Normalise what the user gives (see :data:`Calibration`) to a list of model-input dicts on ``device``.

    Raises:
        HfxError: a tensor that is not (n, T), a batch that is neither a tensor nor a mapping, or no batch.
    """
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2:
            raise HfxError(f"calibration: a tensor must be input_ids of shape (n, T), got {tuple(calibration.shape)}")
        calibration = list(calibration.split(8))
    elif isinstance(calibration, Mapping):
        calibration = [calibration]
    out: list[Batch] = []
    for b in calibration:
        if isinstance(b, torch.Tensor):
            b = {"input_ids": b if b.dim() == 2 else b.view(1, -1)}  # (B, T)
        elif isinstance(b, Mapping):
            b = dict(b)
        else:
            raise HfxError(f"calibration: each batch must be an input_ids tensor or a dict of model inputs, "
                           f"got {type(b).__name__}")
        out.append({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()})
    if not out:
        raise HfxError("calibration is empty; give at least one batch of input_ids")
    return out


def kept_tokens(batch: Batch) -> torch.Tensor | None:
    """(B * T,) bool: the tokens that count in H (not padding), or None when the batch has no attention_mask."""
    mask = batch.get("attention_mask")
    return None if mask is None or mask.dim() != 2 else mask.reshape(-1).bool()


class Hessians:
    """Forward hooks that accumulate sum x^T x over the input tokens x (in,) of some linear layers.

    Layers that read the same input tensor (q, k and v; gate and up) share one product per batch.
    ``keep`` selects the tokens of the current batch that count (padding left out); it is used only when the
    layer sees one row per token of the batch.
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.xtx: dict[str, torch.Tensor] = {}  # name -> (in, in) fp32
        self.tokens: dict[str, int] = dict.fromkeys(modules, 0)
        self.keep: torch.Tensor | None = None
        self._last: tuple[torch.Tensor | None, torch.Tensor | None, int] = (None, None, 0)
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x = args[0]  # (..., in)
            if self._last[0] is not x:
                x2 = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, in)
                if self.keep is not None and self.keep.numel() == x2.shape[0]:
                    x2 = x2[self.keep]
                self._last = (x, x2.T @ x2, x2.shape[0])  # (in, in)
            _, prod, n = self._last
            if name in self.xtx:
                self.xtx[name].add_(prod)
            else:
                self.xtx[name] = prod.clone()
            self.tokens[name] += n
        return hook

    def hessian(self, name: str) -> torch.Tensor | None:
        """H = 2 X^T X / n (in, in) for layer ``name``; None when no token reached it."""
        n = self.tokens[name]
        return None if n == 0 else self.xtx[name] * (2.0 / n)

    def remove(self) -> None:
        """Remove the forward hooks that accumulate the Hessians and forget the last batch seen."""
        for h in self.handles:
            h.remove()
        self._last = (None, None, 0)
