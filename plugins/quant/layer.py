"""``QuantLinear``: a linear layer that stores packed b-bit weight codes, fp16 scales and uint8 zero points.

Weight-only by default: the forward dequantizes the weight, W = (q - Z) * s, and runs an fp32 matmul.
Nothing is cached, so the memory saving holds during inference too; the cost is the dequantization on
every call (the benchmark measures it). Activations can also be quantized:

- ``act_mode="dynamic"``: each token's activation vector is quantized to int8 on the fly with its own
  absmax scale, x = s_x * x_q (LLM.int8's vector-wise quantization, without the outlier split). With 8-bit
  per-channel or per-tensor weights the product runs in integers with ``torch._int_mm`` (int8 x int8 ->
  int32), using (q - Z) = (q - 128) + (128 - Z) so the codes fit int8:
  y = s_x s_w [x_q (q - 128)^T + (128 - Z) sum_k x_q]. Other weight layouts are simulated in fp32.
- ``act_mode="static"``: one (scale, zero) for all activations, fixed beforehand by an observer (QAT's
  ``convert`` fills it); simulated in fp32.

GPT-2's ``Conv1D`` (weight stored (in, out), y = x W + b) is converted by transposing its weight, so the
layer is a plain (out, in) linear from then on.

``QuantLinear`` subclasses ``nn.Linear`` (as bitsandbytes' ``Linear4bit`` / ``Linear8bitLt`` do) so that code
which looks for linear layers, LoRA injection in particular, finds it and wraps it: that is how
``plugin=[quant,lora]`` trains adapters on a frozen quantized base (QLoRA). ``nn.Linear.__init__`` is not run:
there is no float weight parameter, and ``.weight`` is a read-only dequantized view (see :attr:`weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from hfx.errors import HfxError
from hfx.protocols import FoldReport
from hfx_plugins.quant.affine import (
    SCALE_DTYPE,
    affine_codes,
    check_bits,
    dequantize,
    fake_quantize,
    n_groups,
    quantize,
    scale_storage_dtype,
    to_groups,
    ungroup,
)
from hfx_plugins.quant.clip import search_qparams
from hfx_plugins.quant.config import ACT_MODES
from hfx_plugins.quant.kernels import run_kernel
from hfx_plugins.quant.packing import pack, packed_nbytes, unpack

__all__ = ["ACT_MODES", "DequantizedWeight", "PackedCodes", "QuantLinear", "checked_weight", "dynamic_int8", "linear_weight"]

_DATA_GET = torch._C.TensorBase.data.__get__


class DequantizedWeight(torch.Tensor):
    """What ``QuantLinear.weight`` returns: an ordinary tensor for reading, in-place writes raise HfxError.

    Results of operations on it are plain tensors; ``.data`` keeps the type so ``w.data.copy_(...)`` is caught.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.startswith("__"):
            raise HfxError(f"QuantLinear.weight is a dequantized copy and {name} on it would be lost; fold an "
                           "update in with hfx.protocols.fold_update (dequantize, add, requantize), as the lora "
                           "plugin's merge_adapter does")
        if func == _DATA_GET:
            return args[0]
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def dynamic_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8: (..., K) -> codes (..., K) in [-127, 127] as floats, scales (..., 1).

    bitsandbytes' ``int8_vectorwise_quant`` range (restricted: -128 unused), the signed form of
    ``code_range(8, symmetric=True)`` (Z = 128 subtracted); the codes come from :func:`.affine.affine_codes`.
    """
    scale = (x.abs().amax(-1, keepdim=True) / 127.0).clamp(min=1e-12)  # (..., 1); an all-zero token stays zero
    return affine_codes(x, scale, 0.0, -127, 127), scale


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight of an ``nn.Linear`` or a transformers ``Conv1D`` (whose weight is (in, out))."""
    return module.weight.t() if isinstance(module, Conv1D) else module.weight


def checked_weight(module: nn.Module, name: str = "") -> torch.Tensor:
    """``module``'s (out, in) weight as a detached fp32 tensor (GPT-2's ``Conv1D`` (in, out) is transposed).

    Raises:
        HfxError: the weight has NaN/inf values (the message names the layer and how to exclude it).
    """
    w = linear_weight(module).detach().float()  # (out, in)
    if not torch.isfinite(w).all():
        bad = int((~torch.isfinite(w)).sum())
        raise HfxError(f"layer {name or type(module).__name__}: weight has {bad} NaN/inf values; "
                       "fix or exclude the layer (quant.exclude_modules) before quantizing")
    return w


class PackedCodes:
    """Reading packed codes back: what :class:`QuantLinear` and the fused-expert storage
    (:class:`hfx_plugins.quant.experts.PackedExperts`) share. Needs ``bits``, ``group_size``, ``symmetric``,
    ``in_features``, ``out_features`` and the buffers ``qweight``, ``scales`` (rows, G) and ``zeros`` (unless
    symmetric) laid out as :meth:`QuantLinear.from_codes` stores them."""

    bits: int
    group_size: int
    symmetric: bool
    in_features: int
    out_features: int
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor

    def zero_points(self) -> torch.Tensor:
        """Zero points as floats, (rows, G)."""
        if self.symmetric:
            return torch.full(self.scales.shape, float(2 ** (self.bits - 1)), device=self.scales.device)
        return self.zeros.float()

    def codes(self) -> torch.Tensor:
        """The unpacked codes, (out, in) uint8."""
        n = self.out_features * self.in_features
        return unpack(self.qweight, self.bits, n).view(self.out_features, self.in_features)

    def dequantize(self) -> torch.Tensor:
        """The weight the layer computes with, W = (q - Z) * s, (out, in) fp32."""
        codes = self.codes().float()  # (out, in)
        if self.group_size <= 0:  # one (s, Z) per row or per tensor: broadcast directly
            return dequantize(codes, self.scales.float(), self.zero_points())  # (out, in) with (rows, 1)
        g = self.group_size
        if self.in_features % g == 0:
            groups = codes.view(self.out_features, -1, g)  # (out, G, g)
            w = dequantize(groups, self.scales.float()[..., None], self.zero_points()[..., None])
            return w.view(self.out_features, self.in_features)
        groups, _ = to_groups(codes, g)  # short last group: padded view, padding dropped by ungroup
        w = dequantize(groups, self.scales.float()[..., None], self.zero_points()[..., None])  # (out, G, g)
        return ungroup(w, (self.out_features, self.in_features))

    def storage_bits(self) -> int:
        """Bits the weight takes in memory and on disk: packed codes + scales + zero points (bias excluded)."""
        zeros = 0 if self.symmetric else self.zeros.numel() * 8
        return self.qweight.numel() * 8 + self.scales.numel() * self.scales.element_size() * 8 + zeros


class QuantLinear(PackedCodes, nn.Linear):
    """y = x W^T + b with W stored as packed ``bits``-bit codes (see the module docstring).

    Args:
        in_features, out_features: Shape of the layer.
        bits: 8, 4, 3 or 2.
        group_size: -1 per tensor, 0 per output channel, N > 0 groups of N inputs (a short last group is allowed).
        symmetric: Zero point fixed at 2^(bits-1) (no zeros stored) instead of one per group.
        bias: Whether the layer has a (full-precision) bias.
        act_mode: "none", "dynamic" or "static" activation quantization to int8.

    Raises:
        HfxError: (on construction) an unsupported ``bits``, ``group_size`` below -1, or an unknown ``act_mode``.
    """

    def __init__(self, in_features: int, out_features: int, bits: int = 4, group_size: int = 128,
                 symmetric: bool = False, bias: bool = True, act_mode: str = "none") -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate an fp32 weight
        check_bits(bits)
        if act_mode not in ACT_MODES:
            raise HfxError(f"act_mode must be one of {', '.join(ACT_MODES)}, got {act_mode!r}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.symmetric, self.act_mode = bits, group_size, symmetric, act_mode
        rows = 1 if group_size == -1 else out_features
        groups = n_groups(in_features, group_size)
        self.register_buffer("qweight", torch.zeros(packed_nbytes(out_features * in_features, bits), dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(rows, groups, dtype=SCALE_DTYPE))
        if not symmetric:
            self.register_buffer("zeros", torch.zeros(rows, groups, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        if act_mode == "static":
            self.register_buffer("act_scale", torch.tensor(1.0))
            self.register_buffer("act_zero", torch.tensor(0.0))

    @classmethod
    @torch.no_grad()
    def from_float(cls, module: nn.Module, bits: int, group_size: int, symmetric: bool, clip_steps: int = 20,
                   act_mode: str = "none", name: str = "") -> QuantLinear:
        """Quantize an ``nn.Linear`` or ``Conv1D``, choosing each group's range by :func:`search_qparams`.

        Args:
            module: The float layer (weight (out, in), or (in, out) for ``Conv1D``); left unchanged.
            bits: 8, 4, 3 or 2.
            group_size: -1 per tensor, 0 per output channel, N > 0 groups of N inputs.
            symmetric: Zero point fixed at 2^(bits-1) instead of one per group.
            clip_steps: Candidates of the clipping-range search; 0 = plain min/max.
            act_mode: "none", "dynamic" or "static" activation quantization.
            name: The layer's path, for error messages.

        Raises:
            HfxError: the weight has NaN/inf values (naming the layer), or an unsupported ``bits``/``act_mode``.
        """
        return cls._from_matrix(checked_weight(module, name), module.bias, bits, group_size, symmetric,
                                clip_steps, act_mode)

    @classmethod
    @torch.no_grad()
    def _from_matrix(cls, w: torch.Tensor, bias: torch.Tensor | None, bits: int, group_size: int, symmetric: bool,
                     clip_steps: int, act_mode: str) -> QuantLinear:
        """RTN with the clip search of a checked fp32 weight w (out, in)."""
        groups, mask = to_groups(w, group_size)  # (rows, G, g) each
        scale, zero = search_qparams(groups, mask, bits, symmetric, steps=clip_steps)  # (rows, G, 1) each
        codes = ungroup(quantize(groups, scale, zero, bits, symmetric), tuple(w.shape))  # (out, in) uint8
        return cls.from_codes(codes, scale.squeeze(-1), zero.squeeze(-1), bits, group_size, symmetric, bias,
                              act_mode)

    @classmethod
    @torch.no_grad()
    def from_qparams(cls, module: nn.Module, bits: int, group_size: int, symmetric: bool, scale: torch.Tensor,
                     zero: torch.Tensor, act_mode: str = "none") -> QuantLinear:
        """Quantize ``module``'s weight with given per-group (scale, zero), each (rows, G, 1)."""
        w = linear_weight(module).detach().float()  # (out, in)
        groups, _ = to_groups(w, group_size)  # (rows, G, g)
        codes = ungroup(quantize(groups, scale, zero, bits, symmetric), tuple(w.shape))  # (out, in) uint8
        return cls.from_codes(codes, scale.squeeze(-1), zero.squeeze(-1), bits, group_size, symmetric,
                              module.bias, act_mode)

    @classmethod
    @torch.no_grad()
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, group_size: int,
                   symmetric: bool, bias: torch.Tensor | None = None, act_mode: str = "none") -> QuantLinear:
        """A layer holding given codes (out, in) in [0, 2^bits - 1], scales and zero points (rows, G).

        Scales are stored in fp16 (fp32 for a layer whose scales fp16 cannot hold exactly, see
        :mod:`.affine`) and zero points as uint8, as :meth:`from_float` stores them (GPTQ chooses its
        own codes, see :mod:`.gptq`, and builds its layers here). ``zero`` is ignored when ``symmetric``.

        Raises:
            HfxError: scales or zero points whose shape does not fit the codes and ``group_size``, or codes
                above 2^bits - 1.
        """
        out, inp = codes.shape
        rows = 1 if group_size == -1 else out
        if tuple(scale.shape) != (rows, n_groups(inp, group_size)) or scale.shape != zero.shape:
            raise HfxError(f"scales {tuple(scale.shape)} / zeros {tuple(zero.shape)} do not fit codes {(out, inp)} "
                           f"with group_size={group_size}: expected {(rows, n_groups(inp, group_size))}")
        if codes.numel() and int(codes.max()) > 2**bits - 1:
            raise HfxError(f"codes up to {int(codes.max())} do not fit {bits} bits")
        layer = cls(inp, out, bits, group_size, symmetric, bias is not None, act_mode)
        layer.qweight = pack(codes.to(torch.uint8), bits).to(codes.device)
        layer.scales = scale.to(scale_storage_dtype(scale.float()))  # (rows, G); fp32 where fp16 cannot hold them
        if not symmetric:
            layer.zeros = zero.to(torch.uint8)  # (rows, G)
        if bias is not None:
            layer.bias.data = bias.detach().float().clone()
        return layer.to(codes.device)

    # --- hfx.protocols.FoldableBase: how a wrapping layer (LoRA) reads this weight and folds an update in ----
    def effective_weight(self) -> torch.Tensor:
        """The weight the layer computes with: :meth:`dequantize`, (out, in) fp32, a new tensor."""
        return self.dequantize()

    @torch.no_grad()
    def with_update(self, delta: torch.Tensor, name: str = "", clip_steps: int = 20) -> tuple[QuantLinear, FoldReport]:
        """A new layer storing W' = Q(deq(W) + delta) with this layer's bits, grouping, symmetry and act_mode.

        This layer is left unchanged (the caller keeps it to restore it exactly). The new ranges come from the
        clip search (data-free, also for a GPTQ-quantized layer). Merging into a quantized base can do nothing
        else (QLoRA, Dettmers et al. 2023, https://arxiv.org/abs/2305.14314; peft only warns about the rounding);
        the report makes its cost a number.

        Args:
            delta: The update, (out_features, in_features), any float dtype.
            name: The layer's path, for the report and error messages.
            clip_steps: Candidates of the clipping-range search of the requantization (20, as RTN's default).

        Returns:
            The new layer and its ``FoldReport``: ``update_norm`` ||delta||_F, ``merge_error``
            ||deq(W') - (deq(W) + delta)||_F and ``max_error`` max |deq(W') - (deq(W) + delta)|.

        Raises:
            HfxError: ``delta`` has the wrong shape, or W + delta has NaN/inf values.
        """
        if tuple(delta.shape) != (self.out_features, self.in_features):
            raise HfxError(f"layer {name or 'QuantLinear'}: an update of shape {tuple(delta.shape)} does not fit the "
                           f"weight {(self.out_features, self.in_features)} (out, in)")
        w = self.dequantize()  # (out, in)
        merged = w + delta.to(w)  # (out, in)
        if not torch.isfinite(merged).all():
            raise HfxError(f"layer {name or 'QuantLinear'}: the update gives NaN/inf weights; it cannot be folded in")
        new = self._from_matrix(merged, self.bias, self.bits, self.group_size, self.symmetric, clip_steps,
                                self.act_mode)
        if self.act_mode == "static":  # the activation range is the layer's, not the weight's
            new.act_scale, new.act_zero = self.act_scale.clone(), self.act_zero.clone()
        diff = new.dequantize() - merged  # (out, in): what requantizing added
        report = FoldReport(name, delta.float().norm().item(), diff.norm().item(),
                            diff.abs().max().item() if diff.numel() else 0.0)
        return new, report

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """A computed, not stored, fp32 copy of the weight for code that inspects ``.weight`` (T5 checks its
        dtype). Writing into it (e.g. a merge doing ``weight.data.copy_(...)``) raises instead of being silently
        lost; an update is folded in with :meth:`with_update` (what ``hfx.protocols.fold_update`` calls, and so
        the lora plugin's ``merge_adapter``), which requantizes and reports the error it adds.

        Raises:
            HfxError: on assignment (the setter): the weight is packed integers.
        """
        return self.dequantize().detach().as_subclass(DequantizedWeight)

    @weight.setter
    def weight(self, value: torch.Tensor) -> None:
        """Refuse assignment of any tensor (e.g. an (out, in) float weight): the weight is packed integers.

        Raises:
            HfxError: always; quantize a new layer with :meth:`from_float` instead.
        """
        raise HfxError("a QuantLinear's weight is stored as packed integers and cannot be assigned; "
                       "quantize a new layer with QuantLinear.from_float instead")

    def _int8_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic int8 activations x 8-bit per-channel/tensor weights, in integers. x (M, K) -> (M, N)."""
        xq, sx = dynamic_int8(x)  # (M, K), (M, 1)
        xq = xq.to(torch.int8)
        w8 = (self.codes().to(torch.int16) - 128).to(torch.int8)  # (N, K): q - 128 fits int8
        acc = torch._int_mm(xq, w8.t().contiguous()).float()  # (M, N), exact int32 sums
        shift = 128.0 - self.zero_points().t()  # (1, N): (128 - Z) per output channel
        acc = acc + shift * xq.float().sum(-1, keepdim=True)  # (M, N)
        return acc * sx * self.scales.float().t()  # (M, N) * (M, 1) * (1, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x W_q^T + b with W_q = (codes - Z) * s, on the path the layer's settings and the device select.

        - 8-bit codes per channel (or tensor), ``act_mode="dynamic"``: integer matmul of per-token int8 inputs
          and the codes, exact int32 sums, then the scales (:meth:`_int8_matmul`);
        - ``act_mode="dynamic"`` otherwise: inputs fake-quantized per token to int8, then the dequantized
          matmul;
        - ``act_mode="static"``: inputs fake-quantized with the calibrated 8-bit (scale, zero), likewise;
        - no activation quantization, CPU, no gradient needed: the fastest exact kernel for the shape
          (kernels.py);
        - otherwise (training, another device): dequantize, then ``F.linear``: the path with a backward.

        Args:
            x: (..., in_features) inputs.

        Returns:
            (..., out_features) in ``x``'s dtype.
        """
        shape = x.shape  # (..., K)
        if self.act_mode == "dynamic" and self.bits == 8 and self.group_size <= 0:
            y = self._int8_matmul(x.reshape(-1, shape[-1]).float()).view(*shape[:-1], self.out_features)
            y = y if self.bias is None else y + self.bias
            return y.to(x.dtype)
        if self.act_mode == "dynamic":
            xq, sx = dynamic_int8(x.float())
            x = (xq * sx).to(x.dtype)  # simulated: the values an int8 kernel would see
        elif self.act_mode == "static":
            x = fake_quantize(x.float(), self.act_scale, self.act_zero, 0, 255).to(x.dtype)  # observer's 8-bit range
        elif x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad):
            # Inference: the fastest correct kernel for this shape, measured once per machine (.kernels).
            y = run_kernel(self, x, with_bias=True)  # (..., N) float32
            return y if y.dtype == x.dtype else y.to(x.dtype)
        w = self.dequantize().to(x.dtype)  # training: dequantize-then-matmul, the path with a backward
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # New codes or scales make the kernels' converted copies (kept outside state_dict) stale.
        for key in [k for k in self.__dict__ if k.startswith("_hfx_")]:
            del self.__dict__[key]
        state_dict, prefix = args[0], args[1]
        saved = state_dict.get(prefix + "scales")
        if saved is not None and saved.dtype != self.scales.dtype:  # fp32 scales of a tiny/huge layer
            self.scales = torch.empty(self.scales.shape, dtype=saved.dtype, device=self.scales.device)
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        """Sizes, bits, grouping, symmetry and activation mode, shown by ``print(model)``."""
        g = {-1: "per-tensor", 0: "per-channel"}.get(self.group_size, f"group={self.group_size}")
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, {g}, "
                f"{'symmetric' if self.symmetric else 'asymmetric'}, act={self.act_mode}")
