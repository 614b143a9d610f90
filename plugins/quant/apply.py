"""``hfx.apply(model, "quant", bits=4, group_size=128)``: replace linear layers with :class:`QuantLinear`."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hfx.errors import HfxError
from hfx.protocols import base_named_modules, base_path
from hfx.sharing import check_not_shared
from hfx_plugins.quant.config import QuantConfig
from hfx_plugins.quant.experts import (
    PackedExperts,
    check_experts,
    fused_expert_params,
    packed_experts,
    quantize_experts,
)
from hfx_plugins.quant.layer import QuantLinear

__all__ = ["apply", "check_not_quantized", "quantized_layers", "select_experts", "select_linear", "set_module",
           "storage_summary"]

_BNB_CLASSES = ("Linear4bit", "Linear8bitLt", "LinearNF4", "LinearFP4")


def check_not_quantized(model: nn.Module) -> None:
    """Refuse a model that already carries quantized weights.

    Raises:
        HfxError: a layer is hfx's ``QuantLinear`` or a bitsandbytes layer, a layer is a QAT fake-quantized one
            (to be converted instead), or transformers loaded the model quantized (``quantization_config``).
    """
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, PackedExperts)) or type(m).__name__ in _BNB_CLASSES:
            raise HfxError(f"the model is already quantized ({name}: {type(m).__name__}); "
                           "quantize the full-precision model instead of quantizing twice")
        if type(m).__name__ == "FakeQuantLinear":
            raise HfxError(f"the model has QAT fake-quantized layers ({name}); "
                           "use hfx_plugins.qat.convert(model) to turn them into packed layers")
    if getattr(model, "hf_quantizer", None) is not None or getattr(getattr(model, "config", None),
                                                                    "quantization_config", None):
        raise HfxError("the model was loaded already quantized by transformers (quantization_config is set); "
                       "load it in full precision to quantize it with hfx")


def _matches(name: str, suffixes: list[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def select_experts(model: nn.Module, target_modules: object, exclude_modules: list[str]) -> list[str]:
    """Paths (``module.param``) of the fused 3-D expert weights to quantize (:mod:`.experts`), in model order.

    ``all-linear`` selects every one (they are the experts' linear maps); a list selects those whose parameter
    path or module path ends with one of its names (``experts``, ``gate_up_proj``, ``experts.down_proj``);
    ``exclude_modules`` is matched the same way.
    """
    def hit(path: str, names: list[str]) -> bool:
        return _matches(path, names) or _matches(path.rpartition(".")[0], names)

    found = fused_expert_params(model)
    if target_modules != "all-linear":
        found = [p for p in found if hit(p, list(target_modules))]  # type: ignore[call-overload]
    return [p for p in found if not (exclude_modules and hit(p, exclude_modules))]


def select_linear(model: nn.Module, target_modules: object, exclude_modules: list[str],
                  allow_empty: bool = False) -> list[str]:
    """Paths of the linear layers (``nn.Linear`` / ``Conv1D``) to quantize, in model order.

    Names are matched as the model had them before any wrapping plugin: under LoRA, ``q_proj``'s base layer
    (path ``...q_proj.base_layer``) is selected by ``q_proj``, and the adapters, which stay in full precision,
    never are (``hfx.protocols.base_named_modules``).

    Args:
        model: The model whose layers are searched.
        target_modules: "all-linear" (every linear layer but the output layer, as peft's "all-linear"), or a
            list of module-name suffixes.
        exclude_modules: Module-name suffixes never selected.

    Raises:
        HfxError: nothing matches and not ``allow_empty`` (the message lists the model's first linear layers).
    """
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = []
    linears = [(n, m) for n, m in base_named_modules(model) if isinstance(m, (nn.Linear, Conv1D))]
    for path, m in linears:
        name = base_path(path)
        if target_modules == "all-linear":
            if m is out_layer:  # as peft's "all-linear": the output layer (often tied to embeddings) stays
                continue
        elif not _matches(name, list(target_modules)):  # type: ignore[arg-type]
            continue
        if exclude_modules and _matches(name, exclude_modules):
            continue
        names.append(path)
    if not names and not allow_empty:
        sample = ", ".join(n for n, _ in linears[:6]) or "none"
        raise HfxError(f"quant.target_modules={target_modules!r} matches no linear layer; the model has: {sample}, ...")
    return names


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` of ``model`` (the module there is replaced)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def apply(model: nn.Module, cfg: QuantConfig, calibration: Any = None) -> nn.Module:
    """Quantize the selected linear layers of ``model`` in place and return it (frozen: weights are integers).

    Args:
        model: A full-precision model.
        cfg: The quantizer's settings.
        calibration: method=gptq only: batches of model inputs, see
            :data:`hfx_plugins.quant.gptq_inputs.Calibration`; ``hfx.apply(model, "quant", method="gptq",
            calibration=batches)`` passes it here, outside the config.

    Raises:
        HfxError: the model is already quantized, nothing matches ``target_modules``, a weight has NaN/inf
            values, gptq without calibration (or calibration with rtn), gptq or ``group_size=-1`` on fused expert
            weights (:mod:`.experts`), or what GPTQ refuses (see
            :func:`hfx_plugins.quant.gptq_blocks.quantize_gptq`).
    """
    check_not_quantized(model)
    experts = select_experts(model, cfg.target_modules, cfg.exclude_modules)
    check_experts(experts, cfg.group_size)  # before any layer is replaced
    if cfg.method == "gptq":
        if calibration is None:
            raise HfxError("quant.method=gptq needs calibration data: hfx.apply(model, 'quant', method='gptq', "
                           "calibration=[input_ids, ...]) (tensors (B, T) or tokenizer outputs); or use method=rtn")
        if experts:
            raise HfxError(f"quant.method=gptq does not quantize fused 3-D expert weights ({experts[0]!r} and "
                           f"{len(experts) - 1} more: no per-expert Hessian); use method=rtn, or "
                           "quant.exclude_modules=[experts] to leave them in full precision")
        from hfx_plugins.quant.gptq_blocks import quantize_gptq

        check_shared(model, select_linear(model, cfg.target_modules, cfg.exclude_modules))
        return _reported(quantize_gptq(model, cfg, calibration), cfg)
    if calibration is not None:
        raise HfxError(f"calibration is used by quant.method=gptq only; method={cfg.method!r} is data-free")
    names = select_linear(model, cfg.target_modules, cfg.exclude_modules, allow_empty=bool(experts))
    check_shared(model, names)
    for name in names:
        old = model.get_submodule(name)
        new = QuantLinear.from_float(old, cfg.bits, cfg.group_size, cfg.sym, cfg.clip_steps,
                                     cfg.activations, name=name)
        set_module(model, name, new)
    quantize_experts(model, experts, cfg.bits, cfg.group_size, cfg.sym, cfg.clip_steps)
    return _reported(model, cfg)


def _reported(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """Say what was left in full precision (:func:`.coverage.report_coverage`), then warn about fp32 scales."""
    from hfx_plugins.quant.coverage import report_coverage

    report_coverage(model, warn=cfg.target_modules == "all-linear")
    return _report_wide_scales(model)


def check_shared(model: nn.Module, names: list[str]) -> None:
    """Refuse to quantize a layer whose weight another module shares (tied input/output embeddings).

    Replacing one of two modules that share a tensor would leave the other in full precision and break the
    tie silently (and a later save would write two different matrices under one tied name).

    Raises:
        HfxError: naming the selected layer and the module that shares its weight.
    """
    check_not_shared(model, [f"{name}.weight" for name in names], "quantize",
                     "exclude the layer (quant.exclude_modules) or untie the weights first "
                     "(model.config.tie_word_embeddings=False and clone the output layer's weight)")


def _report_wide_scales(model: nn.Module) -> nn.Module:
    """Warn, once per model, about the layers whose scales fp16 cannot hold (kept in fp32, see .affine)."""
    layers = {**quantized_layers(model), **packed_experts(model)}
    wide = [n for n, m in layers.items() if m.scales.dtype == torch.float32]
    if wide:
        warnings.warn(f"{len(wide)} quantized layer(s) keep fp32 scales because their weights are too small or too "
                      f"large for fp16 scales (first: {wide[0]!r}); they take 16 more bits per group", UserWarning,
                      stacklevel=3)
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """Every :class:`QuantLinear` of ``model`` by path (under LoRA: ``...q_proj.base_layer``)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def storage_summary(model: nn.Module) -> dict[str, float]:
    """Quantized parameters, their storage in bits per parameter (codes + scales + zeros), and the model's bytes."""
    layers = {**quantized_layers(model), **packed_experts(model)}  # (E * out, in) matrices for fused experts
    n_q = sum(m.in_features * m.out_features for m in layers.values())
    bits_q = sum(m.storage_bits() for m in layers.values())
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:  # tied weights count once
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return {"quantized_params": float(n_q), "bits_per_param": bits_q / max(n_q, 1), "model_bytes": float(total)}
