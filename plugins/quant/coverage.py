"""What share of a model's matmul weights ``quant`` quantized, and what it left in full precision.

Matmul weights are every weight a matmul multiplies by: ``nn.Linear`` / ``Conv1D`` weights, fused 3-D expert
weights (:mod:`.experts`), a MoE router's (E, H) weight and any other 2-D or larger parameter, except embedding
tables (an ``nn.Embedding`` is a lookup, not a matmul; a tied output layer shares its table and is counted
with it). A weight shared by two modules counts once.
"""

from __future__ import annotations

import logging
import re
import warnings

from torch import nn

from hfx.protocols import base_path
from hfx_plugins.quant.experts import packed_experts
from hfx_plugins.quant.layer import QuantLinear

__all__ = ["coverage", "coverage_message", "report_coverage"]

log = logging.getLogger("hfx.quant")
WARN_SHARE = 0.01
"""Full-precision matmul weights beyond the output layer, as a share of all, above which :func:`report_coverage`
warns instead of logging."""


def coverage(model: nn.Module) -> dict[str, object]:
    """Quantized and full-precision matmul weights of ``model`` (see the module docstring).

    Returns:
        ``quantized`` and ``total`` (numbers of weights), ``share`` (quantized / total) and ``left``: a dict
        from a name pattern (the path with layer numbers replaced by ``*``) to the number of full-precision
        weights under it, largest first.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    quantized = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantLinear))
    quantized += sum(m.in_features * m.out_features for m in packed_experts(model).values())
    left: dict[str, int] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.dim() < 2 or id(p) in embeddings or id(p) in seen or "lora_" in name or name.endswith("bias"):
            continue  # GPT-OSS's per-expert biases (E, out) are 2-D but added, not multiplied
        seen.add(id(p))
        key = re.sub(r"\.\d+\.", ".*.", base_path(name))
        left[key] = left.get(key, 0) + p.numel()
    total = quantized + sum(left.values())
    return {"quantized": quantized, "total": total, "share": quantized / max(total, 1),
            "left": dict(sorted(left.items(), key=lambda kv: -kv[1]))}


def coverage_message(model: nn.Module) -> str:
    """One line: the quantized share of matmul weights and the largest full-precision ones by name."""
    c = coverage(model)
    total = max(int(c["total"]), 1)  # type: ignore[call-overload]
    left = c["left"]
    assert isinstance(left, dict)
    parts = [f"{k} {v / total:.1%}" for k, v in list(left.items())[:4]]
    more = f" and {len(left) - 4} more" if len(left) > 4 else ""
    rest = f"; left in full precision: {', '.join(parts)}{more}" if parts else "; nothing left in full precision"
    return f"quant: {c['share']:.1%} of the matmul weights quantized ({c['quantized']:,} of {c['total']:,}){rest}"


def report_coverage(model: nn.Module, warn: bool = True) -> str:
    """Say what ``quant`` left in full precision: log it, or, with ``warn`` (``target_modules="all-linear"``: the
    user asked for every linear map), warn when more than the output layer (peft's all-linear leaves it too) and
    1% of the matmul weights stayed. An explicit list of targets is the user's choice: logged only. Returns the
    message."""
    msg = coverage_message(model)
    c = coverage(model)
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    w = getattr(out, "weight", None) if isinstance(out, nn.Module) and not isinstance(out, QuantLinear) else None
    tied = w is not None and any(w is m.weight for m in model.modules() if isinstance(m, nn.Embedding))
    out_n = 0 if w is None or tied else w.numel()  # a tied output layer is counted with its embedding table
    total = max(int(c["total"]), 1)  # type: ignore[call-overload]
    unexpected = (total - int(c["quantized"]) - out_n) / total  # type: ignore[call-overload]
    if warn and unexpected > WARN_SHARE:
        warnings.warn(msg, UserWarning, stacklevel=3)
    else:
        log.info(msg)
    return msg

