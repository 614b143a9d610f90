"""``hfx.apply(model, "qat", bits=4)``: swap linear layers for :class:`FakeQuantLinear` to train through."""

from __future__ import annotations

from torch import nn

from hfx.errors import HfxError
from hfx.protocols import effective_weight
from hfx_plugins.qat.config import QatConfig
from hfx_plugins.qat.fake import FakeQuantLinear
from hfx_plugins.quant import check_bits, check_not_quantized, n_groups, select_linear

__all__ = ["apply"]


def apply(model: nn.Module, cfg: QatConfig) -> nn.Module:
    """Fake-quantize the selected layers of ``model`` in place and return it.

    Layers are selected as ``quant`` selects them (``target_modules`` / ``exclude_modules``); each becomes a
    :class:`FakeQuantLinear` holding an fp32 copy of its weight (out, in).

    Raises:
        HfxError: an unsupported bit width or group size, a model already quantized (or already fake-quantized),
            nothing matching ``target_modules``, or a weight with NaN/inf values (naming the layer).
    """
    check_bits(cfg.bits)
    check_not_quantized(model)
    for name in select_linear(model, cfg.target_modules, cfg.exclude_modules):
        old = model.get_submodule(name)
        w = effective_weight(old)  # (out, in); GPT-2's Conv1D (in, out) is read transposed
        if not w.isfinite().all():
            raise HfxError(f"layer {name}: weight has NaN/inf values; fix or exclude it (qat.exclude_modules)")
        n_groups(w.shape[1], cfg.group_size)  # validates the group size
        model.set_submodule(name, FakeQuantLinear(old, cfg.bits, cfg.group_size, cfg.sym, cfg.act_bits,
                                                  cfg.act_observer))
    return model
