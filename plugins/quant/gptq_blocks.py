"""GPTQ on a whole model, block by block (Frantar et al. 2022, https://arxiv.org/abs/2210.17323, section 4).

A model is quantized transformer block by transformer block: the inputs of the first block are captured on
the calibration data; for each block, H is accumulated for each of its linear layers
(:class:`.gptq_inputs.Hessians`) from the inputs that the already-quantized earlier blocks produce, the layers
are quantized (:func:`.gptq.gptq_layer`), and the quantized block is run again to give the next block its
inputs.

Departures from the paper's reference code (github.com/IST-DASLab/gptq):

- Inside a block every linear layer sees inputs computed by the float layers of that block (the reference's
  default; its ``--true-sequential`` option, which requantizes q/k/v before o, is not here).
- **Layers outside the blocks** (BERT's pooler, a classification head) are quantized after the blocks, from
  one forward pass of the whole, partly quantized, model. A layer that the calibration data never reaches
  (no token, H = 0) is rounded to nearest instead of being zeroed.
- Every block is fed the keyword arguments (attention mask, position embeddings) captured at the first block;
  models whose layers take different masks (sliding-window layers mixed with full attention) are refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.quant.apply import select_linear, set_module
from hfx_plugins.quant.config import QuantConfig
from hfx_plugins.quant.gptq import gptq_layer
from hfx_plugins.quant.gptq_inputs import Batch, Calibration, Hessians, calibration_batches, kept_tokens
from hfx_plugins.quant.layer import QuantLinear, checked_weight

__all__ = ["find_blocks", "quantize_gptq"]


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's transformer blocks: the ``nn.ModuleList`` holding the most parameters, and its name.

    ``model.layers`` for Llama, ``encoder.layer`` for BERT, ``transformer.h`` for GPT-2.

    Raises:
        HfxError: the model has no ``nn.ModuleList``, or its blocks mix attention types (sliding-window and
            full), whose masks one replayed mask cannot serve.
    """
    lists = [(sum(p.numel() for p in m.parameters()), n, m) for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise HfxError(f"GPTQ quantizes transformer blocks one after another, and {type(model).__name__} has no "
                       "nn.ModuleList of blocks; use quant.method=rtn")
    _, name, blocks = max(lists, key=lambda t: t[0])
    kinds = {getattr(b, "attention_type", None) for b in blocks}
    if len(kinds) > 1:
        raise HfxError(f"GPTQ replays the first block's attention mask in every block, but {name} mixes attention "
                       f"types {sorted(map(str, kinds))}; use quant.method=rtn for this model")
    return name, blocks


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the first block's inputs are known."""


def _capture(model: nn.Module, block: nn.Module, batches: list[Batch]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The (args, kwargs) the first block receives for each batch; the rest of the model is not run."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append((args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**batch)
            except _Stop:
                continue
            raise HfxError("GPTQ: the model's forward never reached its first block; check the calibration inputs")
    finally:
        handle.remove()
    return seen


def _with_hidden(args: tuple[Any, ...], kwargs: dict[str, Any],
                 hidden: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _output_hidden(out: Any) -> torch.Tensor:
    """A block's output hidden states: the tensor itself, or the first item of a tuple / ModelOutput."""
    return out if isinstance(out, torch.Tensor) else out[0]


class _Dequantized(nn.Module):
    """What a weight-only :class:`QuantLinear` computes, with its weight dequantized once instead of per call.

    Stands in for the new layer while the quantized block is rerun on every calibration batch.
    """

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        self.w, self.b = layer.dequantize(), layer.bias  # (out, in), (out,) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w.to(x.dtype), None if self.b is None else self.b.to(x.dtype))


def _quantize_layers(model: nn.Module, names: list[str], hs: Hessians, cfg: QuantConfig,
                     report: list[dict[str, Any]] | None) -> dict[str, QuantLinear]:
    """GPTQ layers for ``names`` from the Hessians in ``hs``; the model is not changed yet."""
    done: dict[str, QuantLinear] = {}
    for name in names:
        module = model.get_submodule(name)
        h = hs.hessian(name)
        if h is None:  # never reached by the calibration data: round to nearest rather than zero the weight
            new = QuantLinear.from_float(module, cfg.bits, cfg.group_size, cfg.sym, cfg.clip_steps,
                                         cfg.activations, name=name)
        else:
            new = gptq_layer(module, h, cfg, name)
        if report is not None:
            row: dict[str, Any] = {"layer": name, "method": "rtn (no calibration token)" if h is None else "gptq"}
            if h is not None:  # relative output error on the calibration inputs: tr(D H D^T) / tr(W H W^T)
                w = checked_weight(module, name)  # (out, in)
                d = w - new.dequantize()  # (out, in)
                row["rel_output_error"] = float(((d @ h) * d).sum() / ((w @ h) * w).sum().clamp(min=1e-30))
            report.append(row)
        done[name] = new
    return done


@torch.no_grad()
def quantize_gptq(model: nn.Module, cfg: QuantConfig, calibration: Calibration,
                  log: Callable[[str], None] | None = None,
                  report: list[dict[str, Any]] | None = None) -> nn.Module:
    """Quantize ``model``'s selected linear layers in place with GPTQ, block by block (see the module docstring).

    ``calibration``: see :data:`Calibration`. ``log`` receives one progress line per block; ``report``, when
    given, receives one row per layer with its relative output error on the calibration inputs. Returns the
    model, whose quantized layers are ordinary :class:`QuantLinear` (saved and loaded as RTN's).
    """
    device = next(model.parameters()).device
    batches = calibration_batches(calibration, device)
    names = select_linear(model, cfg.target_modules, cfg.exclude_modules)
    prefix, blocks = find_blocks(model)
    per_block = [[n for n in names if n.startswith(f"{prefix}.{i}.")] for i in range(len(blocks))]
    inside = {n for ns in per_block for n in ns}
    outside = [n for n in names if n not in inside]
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    was_training = model.training
    model.eval()
    if use_cache is not None:
        config.use_cache = False  # no KV cache: the blocks are replayed many times on the same inputs
    start = time.perf_counter()
    try:
        if inside:
            inputs = _capture(model, blocks[0], batches)  # [(args, kwargs)] per batch
            last = max(i for i, ns in enumerate(per_block) if ns)
            for i in range(last + 1):
                block = blocks[i]
                new: dict[str, QuantLinear] = {}
                if per_block[i]:
                    hs = Hessians({n: model.get_submodule(n) for n in per_block[i]})
                    try:
                        for (args, kwargs), batch in zip(inputs, batches, strict=True):
                            hs.keep = kept_tokens(batch)
                            block(*args, **kwargs)
                    finally:
                        hs.remove()
                    new = _quantize_layers(model, per_block[i], hs, cfg, report)
                    del hs
                    for name, layer in new.items():
                        set_module(model, name, _Dequantized(layer) if layer.act_mode == "none" else layer)
                try:
                    if i < last:  # the quantized block gives the next block its inputs
                        inputs = [_with_hidden(a, k, _output_hidden(block(*a, **k))) for a, k in inputs]
                finally:
                    for name, layer in new.items():
                        set_module(model, name, layer)
                if log is not None:
                    log(f"  gptq: block {i + 1}/{last + 1} ({len(per_block[i])} layers), "
                        f"{time.perf_counter() - start:.0f} s")
            del inputs
        if outside:  # heads and poolers: one forward of the whole model, its blocks already quantized
            hs = Hessians({n: model.get_submodule(n) for n in outside})
            try:
                for batch in batches:
                    hs.keep = kept_tokens(batch)
                    model(**batch)
            finally:
                hs.remove()
            for name, layer in _quantize_layers(model, outside, hs, cfg, report).items():
                set_module(model, name, layer)
    finally:
        if use_cache is not None:
            config.use_cache = use_cache
        model.train(was_training)
    return model
