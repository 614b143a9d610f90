"""LoRA layers: a frozen base layer plus any number of named low-rank adapters.

For an input x (..., in) and each active adapter a::

    y = base(x) + s_a * B_a A_a dropout(x)        A_a: (r, in), B_a: (out, r)
    s_a = lora_alpha / r                           (rsLoRA: lora_alpha / sqrt(r))

DoRA (https://arxiv.org/abs/2402.09353) splits the adapted weight W' = W + s B A into a learned magnitude m
(out,) and a direction, y = m / ||W'||_row * W' x + b, with the row norm detached from the graph (section 4.3
of the paper), as peft does.

Parameter names and shapes are peft's (``lora_A.<adapter>.weight`` (r, in), ``lora_B.<adapter>.weight``
(out, r), ``lora_magnitude_vector.<adapter>.weight`` (out,)), so a state_dict moves between hfx and peft by
adding or removing peft's ``base_model.model.`` prefix. The embedding layer is in :mod:`.embedding`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hfx.errors import HfxError
from hfx.protocols import effective_weight, fold_update, is_quantized

__all__ = ["DoraMagnitude", "LoraLayer", "LoraLinear", "add_low_rank"]


def add_low_rank(result: torch.Tensor, h: torch.Tensor, B: torch.Tensor, s: float) -> torch.Tensor:
    """``result + s * h @ B.T`` for result (..., out), h (..., r), B (out, r), in one kernel where dtypes allow.

    peft computes ``result + lora_B(h) * s``: three passes over a (..., out) tensor and two kept for backward.
    ``addmm`` folds the scale and the sum into the matmul; the values agree to rounding.
    """
    if result.dtype != h.dtype:  # half-precision base with fp32 adapters: add in the base's dtype
        return result + (F.linear(h, B) * s).to(result.dtype)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]), B.t(), alpha=s)  # (N, out)
    return out.view(result.shape)


class DoraMagnitude(nn.Module):
    """DoRA's magnitude vector m (out,), kept as a module so its key is peft's ``lora_magnitude_vector.<name>.weight``."""

    def __init__(self, magnitude: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(magnitude)


class LoraLayer(nn.Module):
    """What every LoRA layer shares: the base layer, per-adapter rank and scale, and the active/merged state.

    ``path`` is the layer's name in the model (set on injection) so that errors can name it.
    """

    adapter_param_names: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Module, in_features: int, out_features: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = in_features, out_features
        self.path = ""
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False
        # Merging into a quantized base (QLoRA) replaces base_layer by a requantized layer; the original is kept
        # here (a list, so it is no submodule and not in state_dict) for unmerge, with one report per merge.
        self._premerge_base: list[nn.Module] = []
        self.merge_reports: list[dict[str, float | str]] = []

    # transformers code sometimes reads `module.weight` (dtype checks, weight tying): answer with the base's.
    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight, (out, in) for a Linear (transformers reads it for dtype checks and weight tying)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias, or None."""
        return getattr(self.base_layer, "bias", None)

    @property
    def adapters(self) -> list[str]:
        """Names of the adapters this layer holds, in the order they were added."""
        return list(self.r)

    def max_rank(self) -> int:
        """Largest useful rank: B @ A cannot have a rank above min(in, out)."""
        return min(self.in_features, self.out_features)

    def _register(self, name: str, r: int, lora_alpha: float, scaling: float) -> None:
        if name in self.r:
            raise HfxError(f"layer {self.path!r} already has an adapter named {name!r}; choose another adapter_name")
        self.r[name], self.lora_alpha[name], self.scaling[name] = r, lora_alpha, scaling

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        """The trainable tensors of adapter ``name`` in this layer."""
        params: list[nn.Parameter] = []
        for attr in self.adapter_param_names:
            container = getattr(self, attr)
            if name in container:
                item = container[name]
                params.extend(item.parameters() if isinstance(item, nn.Module) else [item])
        return params

    def set_active(self, names: list[str]) -> None:
        """Make ``names`` the adapters used in forward; only their parameters require gradients."""
        self.active_adapters = [n for n in names if n in self.r]
        for name in self.r:
            for p in self.adapter_parameters(name):
                p.requires_grad_(name in self.active_adapters)

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name``'s tensors and settings from this layer.

        Raises:
            HfxError: the adapter is merged into the base weight.
        """
        if name in self.merged_adapters:
            raise HfxError(f"adapter {name!r} is merged into {self.path!r}; unmerge it before deleting it")
        for attr in (*self.adapter_param_names, "lora_dropout"):
            container = getattr(self, attr, None)
            if container is not None and name in container:
                del container[name]
        for table in (self.r, self.lora_alpha, self.scaling):
            table.pop(name, None)
        self.active_adapters = [n for n in self.active_adapters if n != name]

    # --- merging: subclasses give delta_weight(name) in the base weight's own layout -------------------------
    def delta_weight(self, name: str) -> torch.Tensor:
        """s * B @ A of adapter ``name`` in the base weight's layout and shape (e.g. (out, in)); each layer kind defines it.

        Raises:
            NotImplementedError: here; each subclass (Linear, Embedding) implements it.
        """
        raise NotImplementedError

    def _merge_one(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta_weight(name).to(weight.dtype)

    def _unmerge_one(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight - self.delta_weight(name).to(weight.dtype)

    @torch.no_grad()
    def merge(self, names: list[str] | None = None, safe: bool = False) -> list[dict[str, float | str]]:
        """Add adapters ``names`` (default: the active ones) into the base weight; forward then skips them.

        A float base is changed in place (W += s B A, DoRA's rescaled weight for DoRA adapters). A base whose
        weight is stored quantized (``hfx.protocols.is_quantized``: QLoRA, Dettmers et al. 2023) cannot be
        written in place: the sum of the updates is folded in by ``hfx.protocols.fold_update``, which returns a
        new base layer in the base's own storage format and the report of the rounding error that adds.

        Args:
            names: Adapters to merge; unknown names are skipped.
            safe: Check the merged weights (or the update, on a quantized base) for NaN/inf first.

        Returns:
            One report row per merge into a quantized base (``FoldReport.as_row()`` plus ``adapters``, also
            appended to ``merge_reports``); [] for a float base. ``unmerge`` restores the original quantized
            layer exactly.

        Raises:
            HfxError: an adapter already merged, NaN/inf with ``safe``, or a DoRA adapter on a quantized base.
        """
        names = list(self.active_adapters if names is None else [n for n in names if n in self.r])
        twice = [n for n in names if n in self.merged_adapters]
        if twice:
            raise HfxError(f"adapter {twice[0]!r} is already merged into {self.path!r}; call unmerge first "
                           "(merging twice would add the update twice)")
        if is_quantized(self.base_layer):
            return self._merge_quantized(names, safe)
        weight = self.base_layer.weight
        for name in names:
            new = self._merge_one(name, weight.data)
            if safe and not torch.isfinite(new).all():
                raise HfxError(f"merging adapter {name!r} into {self.path!r} gives NaN or inf; the adapter is broken")
            weight.data.copy_(new)
            self.merged_adapters.append(name)
        return []

    def _merge_quantized(self, names: list[str], safe: bool) -> list[dict[str, float | str]]:
        """Fold the sum of the adapters' s B A into a quantized base through the protocol (see :meth:`merge`)."""
        if not names:
            return []
        dora = [n for n in names if n in getattr(self, "lora_magnitude_vector", {})]
        if dora:
            raise HfxError(f"{self.path or 'layer'}: DoRA adapter {dora[0]!r} cannot be merged into a quantized "
                           "base (its row norms would need the float weight); keep it unmerged")
        base = self.base_layer
        delta = sum(self.delta_weight(n).float() for n in names)  # (out, in): a quantized base is never Conv1D
        if safe and not torch.isfinite(delta).all():
            raise HfxError(f"merging adapters {names} into {self.path!r} gives NaN or inf; the adapter is broken")
        new, report = fold_update(base, delta, name=self.path)
        row = {**report.as_row(), "adapters": ",".join(names)}
        if not self._premerge_base:
            self._premerge_base.append(base)
        self.base_layer = new
        self.merged_adapters.extend(names)
        self.merge_reports.append(row)
        return [row]

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take every merged adapter back out of the base weight, newest first."""
        if self._premerge_base:  # quantized base: the layer from before the first merge, bit for bit
            self.base_layer = self._premerge_base.pop()
            self.merged_adapters.clear()
            return
        weight = self.base_layer.weight
        while self.merged_adapters:
            weight.data.copy_(self._unmerge_one(self.merged_adapters.pop(), weight.data))


class LoraLinear(LoraLayer):
    """LoRA on ``nn.Linear`` (weight (out, in)) or GPT-2's ``Conv1D`` (weight (in, out): ``fan_in_fan_out``)."""

    adapter_param_names = ("lora_A", "lora_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool) -> None:
        if is_quantized(base_layer):  # packed weights: the protocol gives the sizes, nothing is dequantized
            in_f, out_f = base_layer.in_features, base_layer.out_features
        else:
            w = base_layer.weight
            in_f, out_f = (w.shape[0], w.shape[1]) if fan_in_fan_out else (w.shape[1], w.shape[0])
        super().__init__(base_layer, in_f, out_f)
        self.fan_in_fan_out = fan_in_fan_out
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ModuleDict()
        self._dora_norms: dict[str, torch.Tensor] = {}  # row norms used when merging, needed to unmerge

    def add_adapter(self, name: str, r: int, lora_alpha: float, scaling: float, dropout: float,
                    init: bool | str, use_dora: bool) -> None:
        """Add adapter ``name``: A (r, in) and B (out, r) as peft builds them, from the global random state.

        With ``init=True`` A is Kaiming-uniform and B zero (Microsoft's loralib, peft's default),
        ``"gaussian"`` draws A from N(0, 1/r); ``False`` keeps nn.Linear's draws for both. The factors are
        fp32 on a half-precision base (peft's ``autocast_adapter_dtype``); ``use_dora`` adds the magnitude m =
        ||W + s B A|| per output row.

        Raises:
            HfxError: this layer already has an adapter called ``name``.
        """
        self._register(name, r, lora_alpha, scaling)
        # peft builds A and B as nn.Linear, whose constructors draw Kaiming-uniform weights from the global RNG
        # before LoRA's own init draws A again. Building them the same way makes one seed give peft's A.
        A = nn.Linear(self.in_features, r, bias=False)  # weight (r, in)
        B = nn.Linear(r, self.out_features, bias=False)  # weight (out, r)
        if init is True:
            nn.init.kaiming_uniform_(A.weight, a=math.sqrt(5))  # nn.Linear's own init, as in Microsoft's loralib
            nn.init.zeros_(B.weight)  # the update starts at zero: the adapted model equals the base model
        elif init == "gaussian":
            nn.init.normal_(A.weight, std=1 / r)
            nn.init.zeros_(B.weight)
        base = self._weight_out_in()  # (out, in); dequantized fp32 for a quantized base
        # fp32 adapters on a half-precision base (peft's autocast_adapter_dtype): small updates survive rounding
        dtype = base.dtype if base.dtype in (torch.float32, torch.float64) else torch.float32
        self.lora_A[name], self.lora_B[name] = A.to(base.device, dtype), B.to(base.device, dtype)
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if use_dora:
            with torch.no_grad():
                norm = self._row_norm(self._weight_out_in().to(dtype), name)  # (out,) = ||W + s B A||_row
            self.lora_magnitude_vector[name] = DoraMagnitude(norm)

    def _weight_out_in(self) -> torch.Tensor:
        """The base weight as (out, in): a view for Conv1D, the dequantized weight for a quantized base."""
        if is_quantized(self.base_layer):
            return effective_weight(self.base_layer)
        w = self.base_layer.weight
        return w.t() if self.fan_in_fan_out else w

    def _row_norm(self, w_out_in: torch.Tensor, name: str) -> torch.Tensor:
        """||W + s B A|| over each output row: (out,)."""
        BA = self.lora_B[name].weight @ self.lora_A[name].weight  # (out, r) @ (r, in) -> (out, in)
        return torch.linalg.norm(w_out_in + self.scaling[name] * BA, dim=1)

    def delta_weight(self, name: str) -> torch.Tensor:
        """s * B @ A in the base weight's layout: (out, in), or (in, out) for Conv1D."""
        delta = (self.lora_B[name].weight @ self.lora_A[name].weight) * self.scaling[name]  # (out, in)
        return delta.t() if self.fan_in_fan_out else delta

    def _row_factor(self, factor: torch.Tensor) -> torch.Tensor:
        """Shape a per-output-row factor (out,) to broadcast over the base weight's layout."""
        return factor.view(1, -1) if self.fan_in_fan_out else factor.view(-1, 1)

    def _merge_one(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            return super()._merge_one(name, weight)
        # DoRA: W' = m / ||W0 + dW||_row * (W + dW). The norm is taken on the weight without any merged adapter,
        # exactly as forward computes it, and kept: unmerging needs the same factor.
        w0 = weight
        for done in reversed(self.merged_adapters):
            w0 = self._unmerge_one(done, w0)
        delta = self.delta_weight(name).to(weight.dtype)
        w0_out_in = w0.t() if self.fan_in_fan_out else w0
        norm = torch.linalg.norm(w0_out_in + (delta.t() if self.fan_in_fan_out else delta), dim=1)  # (out,)
        self._dora_norms[name] = norm
        factor = self.lora_magnitude_vector[name].weight / norm  # (out,)
        return self._row_factor(factor).to(weight.dtype) * (weight + delta)

    def _unmerge_one(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            return super()._unmerge_one(name, weight)
        factor = self.lora_magnitude_vector[name].weight / self._dora_norms[name]  # (out,)
        return weight / self._row_factor(factor).to(weight.dtype) - self.delta_weight(name).to(weight.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """base(x) + s * B A dropout(x) for each active, unmerged adapter (LoRA: Hu et al. 2021).

        LoRA is https://arxiv.org/abs/2106.09685; the order of operations is peft's ``lora.Linear.forward``:
        the adapters run in their own dtype (fp32 on a half-precision base), their sum is added in the base
        output's dtype; a DoRA adapter (Liu et al. 2024, https://arxiv.org/abs/2402.09353) rescales each
        output row by m / ||W + s B A|| instead (:meth:`_dora_forward`). Disabled or merged adapters add
        nothing.

        Args:
            x: (..., in) inputs; ``args``/``kwargs`` go to the base layer unchanged.

        Returns:
            (..., out) in the base layer's output dtype.
        """
        result = self.base_layer(x, *args, **kwargs)  # (..., out)
        if self.disabled:
            return result
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue  # already inside the base weight
            A = self.lora_A[name].weight  # (r, in)
            x_a = x.to(A.dtype)
            if name in self.lora_magnitude_vector:
                result = self._dora_forward(name, x_a, result)
            else:
                h = F.linear(self.lora_dropout[name](x_a), A)  # (..., r)
                result = add_low_rank(result, h, self.lora_B[name].weight, self.scaling[name])
        return result

    def _dora_forward(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """DoRA on top of ``result`` = W x + b (+ adapters before this one), as peft's DoRA layer does."""
        A, B, s = self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name]
        w = self._weight_out_in().to(x.dtype)  # (out, in)
        with torch.no_grad():  # detached norm: DoRA section 4.3
            norm = self._row_norm(w, name)  # (out,)
        scale = self.lora_magnitude_vector[name].weight / norm  # (out,), the gradient reaches m only
        bias = self.base_layer.bias
        dropout = self.lora_dropout[name]
        if isinstance(dropout, nn.Identity) or not self.training:
            # y = scale * (W x + s B A x) + b; peft's (scale - 1) * (result - b) + scale * s * BAx + result
            # is the same sum written with two more passes over (..., out).
            z = add_low_rank(result, F.linear(x, A), B, s)  # result + s B A x
            scale = scale.to(z.dtype)  # fp32 magnitude on a half-precision base: keep the base's dtype
            return torch.addcmul(bias, z - bias, scale) if bias is not None else z * scale
        # With dropout peft feeds the dropped input to the DoRA branch only and recomputes W x' for it; the
        # base path keeps the full input. Kept as is so that training matches peft step for step.
        x_d = dropout(x)
        base_d = F.linear(x_d, w)  # (..., out), no bias
        lora = F.linear(F.linear(x_d, A), B)  # (..., out)
        return (result + (scale - 1) * base_d + scale * lora * s).to(result.dtype)

    def extra_repr(self) -> str:
        """Sizes, the adapters' ranks and the Conv1D layout flag, shown by ``print(model)``."""
        return f"in={self.in_features}, out={self.out_features}, adapters={self.r}, fan_in_fan_out={self.fan_in_fan_out}"
