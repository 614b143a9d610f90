"""A new adapter made from a weighted combination of existing ones (peft's ``add_weighted_adapter``).

Two ways, both giving the new adapter scale 1 (the weights and old scales are folded into A and B):

- ``cat``: stack the factors, A = [w_1 s_1 A_1; w_2 s_2 A_2; ...] (sum r_i, in) and B = [B_1, B_2, ...]
  (out, sum r_i). Then B A = sum_i w_i s_i B_i A_i exactly: the update is the weighted sum of the updates.
- ``linear``: average the factors, A = sum_i sign_i sqrt(|w_i s_i|) A_i and B = sum_i sqrt(|w_i s_i|) B_i
  (equal ranks only). B A then has cross terms B_i A_j: an approximation, cheap and of the same rank.

DoRA adapters are refused: a magnitude vector does not combine linearly, and peft's result for them is not
meaningful either.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.lora.apply import add_adapter
from hfx_plugins.lora.embedding import LoraEmbedding
from hfx_plugins.lora.layer import LoraLayer
from hfx_plugins.lora.model import get_state
from hfx_plugins.lora.trainable import lora_layers

__all__ = ["add_weighted_adapter"]


def _factors(layer: LoraLayer, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of adapter ``name``: A (r, in), B (out, r), for Linear and Embedding layers alike."""
    if isinstance(layer, LoraEmbedding):
        return layer.lora_embedding_A[name], layer.lora_embedding_B[name]
    return layer.lora_A[name].weight, layer.lora_B[name].weight


def add_weighted_adapter(model: nn.Module, adapters: list[str], weights: list[float], adapter_name: str,
                         combination_type: str = "cat") -> None:
    """Add ``adapter_name`` = the combination of ``adapters`` with ``weights`` (not activated, as in peft).

    Raises:
        HfxError: an unknown ``combination_type``, not one weight per adapter, an unknown adapter, a DoRA
            adapter (magnitudes do not add up), or adapters of different ranks with ``linear``.
    """
    state = get_state(model)
    if combination_type not in ("cat", "linear"):
        raise HfxError(f"combination_type {combination_type!r} is not implemented in hfx; use cat or linear")
    if len(adapters) != len(weights) or not adapters:
        raise HfxError(f"give one weight per adapter: {len(adapters)} adapters, {len(weights)} weights")
    missing = [a for a in adapters if a not in state.configs]
    if missing:
        raise HfxError(f"no adapter named {missing[0]!r} on this model; adapters: {', '.join(state.configs)}")
    configs = [state.configs[a] for a in adapters]
    if any(c.use_dora for c in configs):
        raise HfxError("add_weighted_adapter cannot combine DoRA adapters (their magnitude vectors do not add up)")
    if combination_type == "linear" and len(adapters) > 1:
        ranks = {a: sorted({layer.r[a] for layer in lora_layers(model) if a in layer.r}) for a in adapters}
        if len({tuple(r) for r in ranks.values()}) != 1:
            raise HfxError(f"combination_type=linear needs adapters of equal rank, got {ranks}; use cat instead")
    # The new adapter covers the union of the layers: inject it there with a rank large enough, then fill it.
    layers = [layer for layer in lora_layers(model) if any(a in layer.r for a in adapters)]
    new_rank = {layer.path: _new_rank(layer, adapters, combination_type) for layer in layers}
    paths = [layer.path for layer in layers]
    cfg = dataclasses.replace(configs[0], adapter_name=adapter_name, target_modules=paths, exclude_modules=None,
                              layers_to_transform=None, layers_pattern=None, r=max(new_rank.values()),
                              lora_alpha=float(max(new_rank.values())), use_rslora=False, modules_to_save=None,
                              rank_pattern={re.escape(p): r for p, r in new_rank.items()},
                              alpha_pattern={re.escape(p): float(r) for p, r in new_rank.items()})
    with torch.random.fork_rng(devices=[]):  # the fill below overwrites the random init: leave the RNG as it was
        add_adapter(model, cfg, activate=False)
    with torch.no_grad():
        for layer in layers:
            A_new, B_new = _factors(layer, adapter_name)
            A, B = _combine(layer, adapters, weights, combination_type)
            A_new.copy_(A)
            B_new.copy_(B)


def _new_rank(layer: LoraLayer, adapters: list[str], combination_type: str) -> int:
    ranks = [layer.r[a] for a in adapters if a in layer.r]
    return sum(ranks) if combination_type == "cat" else ranks[0]


def _combine(layer: LoraLayer, adapters: list[str], weights: list[float], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    As, Bs = [], []
    for name, w in zip(adapters, weights, strict=True):
        if name not in layer.r:
            continue
        A, B = _factors(layer, name)
        ws = w * layer.scaling[name]
        if kind == "cat":
            As.append(A * ws)  # (r_i, in): the weight and old scale go on A only
            Bs.append(B)  # (out, r_i)
        else:  # split |w s| between the factors; the sign goes on A only, or it would cancel out
            As.append(A * math.copysign(math.sqrt(abs(ws)), ws))
            Bs.append(B * math.sqrt(abs(ws)))
    if kind == "cat":
        return torch.cat(As, dim=0), torch.cat(Bs, dim=1)  # (sum r_i, in), (out, sum r_i)
    return torch.stack(As).sum(0), torch.stack(Bs).sum(0)  # (r, in), (out, r)
