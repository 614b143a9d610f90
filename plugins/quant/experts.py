"""Fused MoE experts: quantizing the 3-D expert weights that no ``nn.Linear`` holds.

transformers 5 stores the experts of Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE (``MixtralExperts`` and kin) as
two 3-D parameters per layer, ``experts.gate_up_proj`` (E, 2I, H) and ``experts.down_proj`` (E, H, I), each
expert's slice an (out, in) matrix that ``F.linear`` (or ``torch._grouped_mm``) applies; with
``is_transposed`` (GPT-OSS) a slice is (in, out). On a tiny Mixtral these hold most of the matmul weights, so
quantizing only the ``nn.Linear`` layers left nearly all of them in full precision.

The same affine formula as every other layer (:mod:`.affine`, RTN with the clip search of
:meth:`QuantLinear._from_matrix`) is applied to the parameter viewed as one (E * out, in) matrix: its rows are
(expert, output channel) pairs, so ``group_size=0`` gives one (s, Z) per expert per output channel and groups
of N inputs never straddle two experts. ``group_size=-1`` (one scale for the whole tensor) would share one
scale across experts and is refused by name.

Storage: the parameter is replaced by a child module ``<name>_packed`` (:class:`PackedExperts`: packed codes,
scales, zero points, as ``QuantLinear`` keeps them) and the experts module's class by a subclass whose
``<name>`` attribute is a property returning the dequantized (E, out, in) weight in the parameter's former
dtype: the family's own forward (eager loop, ``batched_mm`` or ``grouped_mm``) runs unchanged on it. This is
the mechanism of ``torch.nn.utils.parametrize`` (a class swap plus a property); parametrize itself is not
used because it keeps the original tensor as a parameter. One layer's experts are dequantized per forward
(memory: one fp32 copy of that layer's experts at a time).
"""

from __future__ import annotations

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.quant.layer import PackedCodes, QuantLinear
from hfx_plugins.quant.packing import packed_nbytes

__all__ = ["SUFFIX", "PackedExperts", "check_experts", "fused_expert_params", "install_packed", "packed_experts", "quantize_experts"]

SUFFIX = "_packed"
"""Name of the child module that replaces a quantized 3-D parameter: ``gate_up_proj`` -> ``gate_up_proj_packed``."""


def fused_expert_params(model: nn.Module) -> list[str]:
    """Paths (``module.param``) of every fused 3-D expert weight of ``model``, in model order.

    A fused expert weight is a 3-D parameter held directly by a module that has ``num_experts`` experts (or
    whose class name says Experts) with one slice per expert: transformers 5's ``*Experts`` modules.
    """
    found = []
    for path, module in model.named_modules():
        n_exp = getattr(module, "num_experts", None)
        if n_exp is None and "expert" not in type(module).__name__.lower():
            continue
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() == 3 and (n_exp is None or p.shape[0] == n_exp):
                found.append(f"{path}.{pname}" if path else pname)
    return found


class PackedExperts(PackedCodes, nn.Module):
    """Packed codes of one fused expert weight (E, out, in), stored as the (E * out, in) matrix of :mod:`.layer`.

    Args:
        num_experts, out_features, in_features: E, out and in of one expert's (out, in) matrix.
        bits, group_size, symmetric: as :class:`QuantLinear` (``group_size`` 0 or N > 0: see the module docstring).
        transposed: the parameter is stored (E, in, out) (``is_transposed``); codes are kept (E * out, in).
        dtype: the dtype the dequantized weight is returned in (the parameter's own).

    Raises:
        HfxError: ``group_size=-1``, which would share one scale across experts.
    """

    def __init__(self, num_experts: int, out_features: int, in_features: int, bits: int = 4, group_size: int = 0,
                 symmetric: bool = False, transposed: bool = False, dtype: str = "float32") -> None:
        super().__init__()
        if group_size == -1:
            raise HfxError("quant.group_size=-1 (one scale per tensor) would share one scale across the experts of a "
                           "fused expert weight; use group_size=0 (per expert, per output channel) or N > 0")
        self.num_experts, self.expert_out, self.transposed, self.dtype_name = num_experts, out_features, transposed, dtype
        self.in_features, self.out_features = in_features, num_experts * out_features  # the (E * out, in) matrix
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric
        template = QuantLinear(in_features, self.out_features, bits, group_size, symmetric, bias=False)
        self.register_buffer("qweight", torch.zeros(packed_nbytes(self.out_features * in_features, bits),
                                                    dtype=torch.uint8))
        self.register_buffer("scales", template.scales.clone())
        if not symmetric:
            self.register_buffer("zeros", template.zeros.clone())

    def spec(self) -> dict[str, object]:
        """The constructor's arguments: what ``hfx_quant.json`` records to rebuild the empty module on load."""
        return {"num_experts": self.num_experts, "out_features": self.expert_out, "in_features": self.in_features,
                "bits": self.bits, "group_size": self.group_size, "symmetric": self.symmetric,
                "transposed": self.transposed, "dtype": self.dtype_name}

    @classmethod
    @torch.no_grad()
    def from_param(cls, w: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip_steps: int = 20,
                   transposed: bool = False, name: str = "") -> PackedExperts:
        """Quantize a fused expert weight ``w`` (E, out, in), or (E, in, out) when ``transposed``.

        Raises:
            HfxError: ``w`` has NaN/inf values (naming it), or ``group_size=-1``.
        """
        w3 = w.detach().float()
        w3 = w3.transpose(1, 2) if transposed else w3  # (E, out, in)
        n_exp, out, inp = w3.shape
        if not torch.isfinite(w3).all():
            raise HfxError(f"fused expert weight {name or 'experts'}: {int((~torch.isfinite(w3)).sum())} NaN/inf "
                           "values; fix or exclude it (quant.exclude_modules) before quantizing")
        new = cls(n_exp, out, inp, bits, group_size, symmetric, transposed, str(w.dtype).removeprefix("torch."))
        layer = QuantLinear._from_matrix(w3.reshape(n_exp * out, inp), None, bits, group_size, symmetric,
                                         clip_steps, "none")  # rows = (expert, output channel) pairs
        new.qweight, new.scales = layer.qweight, layer.scales
        if not symmetric:
            new.zeros = layer.zeros
        return new.to(w.device)

    def weight(self) -> torch.Tensor:
        """The dequantized fused weight in the parameter's layout and dtype: (E, out, in), or (E, in, out)."""
        w = self.dequantize().view(self.num_experts, self.expert_out, self.in_features)  # (E, out, in)
        w = w.transpose(1, 2) if self.transposed else w  # (E, in, out)
        return w.to(getattr(torch, self.dtype_name))

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        state_dict, prefix = args[0], args[1]
        saved = state_dict.get(prefix + "scales")
        if saved is not None and saved.dtype != self.scales.dtype:  # fp32 scales of tiny/huge weights (.affine)
            self.scales = torch.empty(self.scales.shape, dtype=saved.dtype, device=self.scales.device)
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        """Experts, shape, bits and grouping, shown by ``print(model)``."""
        g = "per-channel" if self.group_size == 0 else f"group={self.group_size}"
        return (f"experts={self.num_experts}, out={self.expert_out}, in={self.in_features}, bits={self.bits}, {g}, "
                f"{'symmetric' if self.symmetric else 'asymmetric'}{', transposed' if self.transposed else ''}")


_CLASSES: dict[tuple[type, frozenset[str]], type] = {}


def _packed_property(name: str) -> property:
    def get(self: nn.Module) -> torch.Tensor:
        return self._modules[name + SUFFIX].weight()

    def put(self: nn.Module, value: object) -> None:
        raise HfxError(f"{type(self).__name__}.{name} is stored as packed integers and cannot be assigned; "
                       "quantize the full-precision model again instead")

    return property(get, put, doc=f"``{name}`` dequantized from ``{name}{SUFFIX}`` (a fresh tensor each read).")


def install_packed(module: nn.Module, name: str, packed: PackedExperts) -> None:
    """Replace ``module``'s parameter ``name`` with ``packed`` (child ``name + SUFFIX``), read back as ``name``.

    The module's class becomes ``Quant<Class>``, a subclass with one property per packed weight (see the module
    docstring); subclasses are cached per (class, names).
    """
    if name in module._parameters:
        del module._parameters[name]
    module.add_module(name + SUFFIX, packed)
    base = getattr(type(module), "_hfx_base_class", type(module))
    names = frozenset(k[: -len(SUFFIX)] for k, m in module.named_children() if isinstance(m, PackedExperts))
    if (base, names) not in _CLASSES:
        attrs: dict[str, object] = {n: _packed_property(n) for n in names}
        attrs["_hfx_base_class"] = base
        _CLASSES[(base, names)] = type(f"Quant{base.__name__}", (base,), attrs)
    module.__class__ = _CLASSES[(base, names)]


def packed_experts(model: nn.Module) -> dict[str, PackedExperts]:
    """Every :class:`PackedExperts` of ``model`` by path (``...experts.gate_up_proj_packed``)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PackedExperts)}


def check_experts(paths: list[str], group_size: int) -> None:
    """Refuse ``group_size=-1`` when fused expert weights are selected (before any layer is replaced).

    Raises:
        HfxError: naming the first selected expert weight.
    """
    if paths and group_size == -1:
        raise HfxError(f"quant.group_size=-1 (one scale per tensor) would share one scale across the experts of "
                       f"{paths[0]!r}; use group_size=0 (per expert, per output channel), N > 0, or exclude them "
                       "(quant.exclude_modules=[experts])")


def quantize_experts(model: nn.Module, paths: list[str], bits: int, group_size: int, symmetric: bool,
                     clip_steps: int) -> None:
    """Quantize the fused expert weights at ``paths`` (from :func:`fused_expert_params`) in place.

    Raises:
        HfxError: ``group_size=-1`` (naming the first weight), or a weight with NaN/inf values.
    """
    check_experts(paths, group_size)
    for path in paths:
        mod_path, _, name = path.rpartition(".")
        module = model.get_submodule(mod_path)
        packed = PackedExperts.from_param(module._parameters[name], bits, group_size, symmetric, clip_steps,
                                          bool(getattr(module, "is_transposed", False)), name=path)
        install_packed(module, name, packed)
