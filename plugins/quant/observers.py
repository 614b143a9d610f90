"""Activation observers: they watch activations go by and decide the range [lo, hi] to quantize them with.

Weights are known in advance; activations are not, so a static activation scale is chosen from what an
observer saw during calibration or quantization-aware training (torch.ao.quantization has the same three):

- :class:`MinMaxObserver`: the running min and max of everything seen. One outlier widens the range for good.
- :class:`MovingAverageObserver`: an exponential moving average of each batch's min and max
  (lo <- (1 - m) lo + m batch_min), so old extremes fade; ``momentum`` m = 0.01 as in PyTorch's
  ``MovingAverageMinMaxObserver`` (the first batch sets the range directly).
- :class:`PercentileObserver`: the ``percentile`` and ``100 - percentile`` quantiles of each batch, averaged
  the same way, so the rarest outliers are clipped on purpose. Quantiles are computed on at most
  ``max_samples`` evenly strided values of the batch (torch.quantile refuses inputs above 2^24 values).

All observers are per-tensor (one range for the whole activation tensor).
"""

from __future__ import annotations

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.quant.affine import choose_qparams

__all__ = ["OBSERVERS", "MinMaxObserver", "MovingAverageObserver", "Observer", "PercentileObserver", "make_observer"]


class Observer(nn.Module):
    """Base class: keeps ``lo`` and ``hi`` as buffers (so they are saved with the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(0, dtype=torch.long))

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) of one batch ``x`` (any shape) as two () tensors; subclasses may differ."""
        return x.min(), x.max()

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Fold one batch's () ``lo`` and ``hi`` into the running range; each observer defines how."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Record ``x`` (any shape) and return it unchanged."""
        lo, hi = self.batch_range(x.detach().float())
        if int(self.seen) == 0:
            self.lo.copy_(lo)
            self.hi.copy_(hi)
        else:
            self.combine(lo, hi)
        self.seen += 1
        return x

    def qparams(self, bits: int, symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero) for the observed range, scalars (0-dim tensors).

        Raises:
            HfxError: the observer has seen no data yet.
        """
        if int(self.seen) == 0:
            raise HfxError("an activation observer has seen no data; run calibration batches through the model first")
        return choose_qparams(self.lo, self.hi, bits, symmetric)


class MinMaxObserver(Observer):
    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Widen the running range to this batch's () ``lo``/``hi`` (torch.ao's ``MinMaxObserver``)."""
        self.lo.copy_(torch.minimum(self.lo, lo))
        self.hi.copy_(torch.maximum(self.hi, hi))


class MovingAverageObserver(Observer):
    """Exponential moving average of each batch's (min, max), as torch.ao's ``MovingAverageMinMaxObserver``.

    Raises:
        HfxError: (on construction) ``momentum`` outside (0, 1].
    """

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise HfxError(f"observer momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum

    def combine(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Move the running ``lo``/``hi`` towards this batch's () values by ``momentum`` (an EMA)."""
        self.lo.lerp_(lo, self.momentum)
        self.hi.lerp_(hi, self.momentum)


class PercentileObserver(MovingAverageObserver):
    """Moving average of each batch's (100 - p, p) percentiles instead of its (min, max): outliers are clipped.

    Raises:
        HfxError: (on construction) ``percentile`` outside (50, 100] or ``momentum`` outside (0, 1].
    """

    def __init__(self, percentile: float = 99.9, momentum: float = 0.01, max_samples: int = 1 << 20) -> None:
        super().__init__(momentum)
        if not 50.0 < percentile <= 100.0:
            raise HfxError(f"observer percentile must be in (50, 100], got {percentile}")
        self.percentile, self.max_samples = percentile, max_samples

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (100 - p, p) percentiles of ``x`` (any shape; subsampled to max_samples), as () tensors."""
        flat = x.reshape(-1)
        if flat.numel() > self.max_samples:
            flat = flat[:: -(-flat.numel() // self.max_samples)]  # evenly strided subsample
        q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0])
        lo, hi = torch.quantile(flat, q)
        return lo, hi


OBSERVERS = {"minmax": MinMaxObserver, "moving_average": MovingAverageObserver, "percentile": PercentileObserver}


def make_observer(name: str) -> Observer:
    """Build an observer by name: minmax, moving_average or percentile.

    Raises:
        HfxError: an unknown name.
    """
    if name not in OBSERVERS:
        raise HfxError(f"unknown observer {name!r}; choose one of {', '.join(OBSERVERS)}")
    return OBSERVERS[name]()
