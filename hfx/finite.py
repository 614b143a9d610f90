"""NaN and inf checks that name what is broken: the layer of a weight, the input row of an embedding.

A NaN that reaches quantization becomes a NaN scale and a whole group of garbage codes; one that reaches
an index or a similarity matrix ranks every other row wrongly. Both are silent, so plugins check first:

    assert_finite_weights(model, "quantize")                     # before computing scales
    assert_finite(embeddings, "embeddings", rows=texts)           # (N, H), one row per input text

No torch import here: only tensor methods are used, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hfx.errors import HfxError

__all__ = ["assert_finite", "assert_finite_weights"]


def _counts(tensor: Any) -> tuple[int, int]:
    return int(tensor.isnan().sum()), int(tensor.isinf().sum())


def assert_finite(tensor: Any, what: str, rows: Sequence[Any] | None = None, hint: str = "") -> None:
    """Raise a one-line error if ``tensor`` holds NaN or inf, naming the first bad row.

    Args:
        tensor: A torch tensor or numpy array of any shape; for (N, ...) the first index is the input row.
        what: What the tensor is, for the message ("embeddings", "weight of layer 'x'").
        rows: Optional name of each row (the input texts): the first bad row's is quoted (80 characters).
        hint: What to do, appended to the message.

    Raises:
        HfxError: ``tensor`` has a NaN or an infinity.
    """
    if not hasattr(tensor, "isfinite"):  # a numpy array (encode() outputs)
        import torch

        tensor = torch.as_tensor(tensor)
    if tensor.is_floating_point() is False or bool(tensor.isfinite().all()):
        return
    nan, inf = _counts(tensor)
    where = ""
    if tensor.dim() >= 1:
        bad = (~tensor.isfinite()).reshape(tensor.shape[0], -1).any(-1)  # (N,)
        first = int(bad.nonzero()[0, 0])
        where = f"; first bad row {first} of {tensor.shape[0]} ({int(bad.sum())} rows affected)"
        if rows is not None and first < len(rows):
            where += f": {str(rows[first])[:80]!r}"
    raise HfxError(f"{what} {tuple(tensor.shape)} has {nan} NaN and {inf} inf values{where}"
                   + (f"; {hint}" if hint else ""))


def assert_finite_weights(model: Any, purpose: str, names: Sequence[str] | None = None) -> None:
    """Check every floating-point parameter (or only those under the module ``names``) before ``purpose``.

    Raises:
        HfxError: naming the first layer whose weight holds NaN or inf, with the counts.
    """
    for name, param in model.named_parameters():
        if names is not None and not any(name == n or name.startswith(n + ".") for n in names):
            continue
        if param.is_floating_point() and not bool(param.detach().isfinite().all()):
            layer, _, kind = name.rpartition(".")
            nan, inf = _counts(param.detach())
            raise HfxError(f"{kind} of layer {layer!r} {tuple(param.shape)} has {nan} NaN and {inf} inf values, "
                           f"so it cannot {purpose}; the checkpoint or an earlier step is broken: reload the model "
                           "or find the step where the loss became NaN")
