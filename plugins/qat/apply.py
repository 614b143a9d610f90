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
            nothing matching ``target_modules``, a weight with NaN/inf values (naming the layer), or fused 3-D MoE
            expert weights (transformers 5's Mixtral, Qwen-MoE, OLMoE), which no Linear holds.
    """
    check_bits(cfg.bits)
    check_not_quantized(model)
    experts = _fused_experts(model)
    if experts:  # FakeQuantLinear wraps nn.Linear; these 3-D weights would train and save in full precision
        raise HfxError(f"qat fake-quantizes Linear layers only, and this model keeps its MoE experts as fused 3-D "
                       f"weights ({experts[0]}, {len(experts)} in all) that would stay in full precision; quantize "
                       "it after training with quant (which quantizes fused experts) instead")
    for name in select_linear(model, cfg.target_modules, cfg.exclude_modules):
        old = model.get_submodule(name)
        w = effective_weight(old)  # (out, in); GPT-2's Conv1D (in, out) is read transposed
        if not w.isfinite().all():
            raise HfxError(f"layer {name}: weight has NaN/inf values; fix or exclude it (qat.exclude_modules)")
        n_groups(w.shape[1], cfg.group_size)  # validates the group size
        model.set_submodule(name, FakeQuantLinear(old, cfg.bits, cfg.group_size, cfg.sym, cfg.act_bits,
                                                  cfg.act_observer))
    return model


def _fused_experts(model: nn.Module) -> list[str]:
    """Paths of the 3-D expert weights of transformers 5's fused ``*Experts`` modules (Mixtral, Qwen-MoE, OLMoE):
    (E, out, in) parameters held by a module whose class name says Experts."""
    return [f"{path}.{name}" for path, module in model.named_modules() if "experts" in type(module).__name__.lower()
            for name, p in module.named_parameters(recurse=False) if p.dim() == 3]
