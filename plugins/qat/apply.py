"""``hfx.apply(model, "qat", bits=4)``: swap linear layers for :class:`FakeQuantLinear` to train through."""

from __future__ import annotations

from torch import nn

from hfx.errors import HfxError
from hfx_plugins.qat.config import QatConfig
from hfx_plugins.qat.fake import FakeQuantLinear
from hfx_plugins.quant.affine import check_bits, n_groups
from hfx_plugins.quant.apply import check_not_quantized, select_linear, set_module
from hfx_plugins.quant.layer import linear_weight

__all__ = ["apply"]


def apply(model: nn.Module, cfg: QatConfig) -> nn.Module:
    """Fake-quantize the selected layers of ``model`` in place; NaN/inf weights are reported by layer name."""
    check_bits(cfg.bits)
    check_not_quantized(model)
    for name in select_linear(model, cfg.target_modules, cfg.exclude_modules):
        old = model.get_submodule(name)
        w = linear_weight(old)
        if not w.isfinite().all():
            raise HfxError(f"layer {name}: weight has NaN/inf values; fix or exclude it (qat.exclude_modules)")
        n_groups(w.shape[1], cfg.group_size)  # validates the group size
        set_module(model, name, FakeQuantLinear(old, cfg.bits, cfg.group_size, cfg.symmetric, cfg.act_bits,
                                                cfg.act_observer))
    return model
