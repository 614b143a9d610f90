"""Which layers get an adapter, and putting the LoRA layers in place.

Matching follows peft's rules, so one config picks the same layers in both libraries:

- a list of names: a layer matches when its path equals a name or ends with ``.name``;
- one string: a regular expression that must match the whole path (``re.fullmatch``);
- ``all-linear``: every ``nn.Linear`` / ``Conv1D`` except the output layer;
- ``exclude_modules`` (same rules) and anything under ``modules_to_save`` are never adapted;
- ``layers_to_transform`` keeps paths whose layer index (the number after ``layers_pattern``, or after the
  first numbered segment) is listed.

Layers are visited in ``model.named_modules()`` order, as in peft: the adapters draw their random
initialisation from the global RNG in that order, so one seed gives peft's weights. Every check runs
before the first layer is replaced, so a bad config leaves the model untouched.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from hfx.errors import HfxError, did_you_mean
from hfx.sharing import check_not_shared
from hfx_plugins.lora.config import LoraConfig
from hfx_plugins.lora.embedding import LoraEmbedding
from hfx_plugins.lora.layer import LoraLayer, LoraLinear
from hfx_plugins.lora.trainable import ModulesToSave, selects_to_save

__all__ = ["DEFAULT_TARGETS", "PEFT_DEFAULT_TARGETS", "candidate_names", "inject", "internal_prefixes",
           "modules_to_save_paths", "name_matches", "resolve_targets", "wrap_modules_to_save"]

# model_type -> default targets. PEFT_DEFAULT_TARGETS is peft 0.21.2's table, copied entry for entry
# (``peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``; tests/plugins/lora/
# test_default_targets.py checks it against the installed peft), so that an unset target_modules adapts the layers
# peft's ``get_peft_model`` would adapt. A string is one regular expression (gemma4's text layers only).
PEFT_DEFAULT_TARGETS: dict[str, list[str] | str] = {
    "t5": ["q", "v"], "mt5": ["q", "v"], "bart": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
    "bloom": ["query_key_value"], "blip-2": ["q", "v", "q_proj", "v_proj"], "opt": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"], "gpt_neox": ["query_key_value"], "gpt_neo": ["q_proj", "v_proj"],
    "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"], "deberta-v2": ["query_proj", "value_proj"], "deberta": ["in_proj"],
    "layoutlm": ["query", "value"], "llama": ["q_proj", "v_proj"], "llama4": ["q_proj", "v_proj"],
    "chatglm": ["query_key_value"], "gpt_bigcode": ["c_attn"], "mpt": ["Wqkv"],
    "RefinedWebModel": ["query_key_value"], "RefinedWeb": ["query_key_value"], "falcon": ["query_key_value"],
    "btlm": ["c_proj", "c_attn"], "codegen": ["qkv_proj"], "mistral": ["q_proj", "v_proj"],
    "mixtral": ["q_proj", "v_proj"], "stablelm": ["q_proj", "v_proj"], "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "gemma": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"], "gemma3_text": ["q_proj", "v_proj"],
    "gemma4": r".*language_model\..*\.(q_proj|v_proj)", "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"], "nemotron_h": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "rwkv": ["key", "value", "receptance", "output"],
    "rwkv7": ["r_proj", "k_proj", "v_proj", "o_proj", "key", "value"],
}
# Types peft's table lacks, for which hfx picks the attention's query and value projections (or the fused qkv).
DEFAULT_TARGETS: dict[str, list[str] | str] = {
    **{t: ["q_proj", "v_proj"] for t in ("smollm3", "olmo", "granite")},
    "encoder-decoder": ["query", "value"], "distilbert": ["q_lin", "v_lin"], "phi3": ["qkv_proj"],
    **PEFT_DEFAULT_TARGETS,
}
_SUPPORTED = (nn.Linear, Conv1D, nn.Embedding)
_LINEAR = (nn.Linear, Conv1D)


def name_matches(names: Any, key: str) -> bool:
    """Whether module path ``key`` is selected by ``names``, with peft's rules for ``target_modules``.

    A string is a regular expression matched against the whole path; a list matches a path equal to one of its
    names or ending in ``.<name>`` (``q_proj`` matches ``model.layers.0.self_attn.q_proj``).
    """
    if isinstance(names, str):
        return re.fullmatch(names, key) is not None
    return key in names or any(key.endswith(f".{n}") for n in names)


def _layer_index_ok(cfg: LoraConfig, key: str) -> bool:
    if cfg.layers_to_transform is None:
        return True
    if cfg.layers_pattern is None:
        # lazy .*? takes the first numbered segment (the layer), not a nested one such as an expert index
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        patterns = [cfg.layers_pattern] if isinstance(cfg.layers_pattern, str) else cfg.layers_pattern
        match = next((m for p in patterns if (m := re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", key))), None)
    return match is not None and int(match["idx"]) in cfg.layers_to_transform


def _pattern_value(patterns: dict[str, Any], key: str, default: Any) -> Any:
    """peft's rank_pattern / alpha_pattern lookup: the first pattern matching the end of the path."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", key):
            return value
    return default


def internal_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Path prefixes inside LoRA layers and modules_to_save wrappers (never targets themselves)."""
    return tuple(f"{k}." for k, m in model.named_modules() if isinstance(m, (LoraLayer, ModulesToSave)) and k)


def candidate_names(model: nn.Module) -> list[str]:
    """Short names of the layers LoRA can adapt (Linear, Conv1D, Embedding), in model order."""
    inside = internal_prefixes(model)
    names = [k.rsplit(".", 1)[-1] for k, m in model.named_modules()
             if (isinstance(m, _SUPPORTED) or isinstance(m, LoraLayer)) and not k.startswith(inside)]
    return list(dict.fromkeys(names))


def _all_linear(model: nn.Module) -> list[str]:
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [k for k, m in model.named_modules()
            if (isinstance(m, _LINEAR) or isinstance(m, LoraLinear)) and m is not out_layer and k]


def _refuse_fused_experts(model: nn.Module) -> None:
    """all-linear on a MoE whose experts are fused 3-D parameters (transformers 5's Mixtral, Qwen-MoE, OLMoE):
    peft 0.21 then also adapts the router and each expert weight (its ``target_parameters`` wrapper), which hfx's
    LoRA does not; picking fewer layers than peft under the same config would be silent, so it is refused."""
    fused = [f"{k}.{n}" for k, m in model.named_modules() for n, p in m.named_parameters(recurse=False)
             if p.dim() == 3 and "expert" in type(m).__name__.lower()]
    if fused:
        raise HfxError(f"lora.target_modules=all-linear on {type(model).__name__}: peft also adapts its fused 3-D "
                       f"expert weights ({fused[0]} and {len(fused) - 1} more, peft's target_parameters) and its "
                       "routers, which hfx's LoRA does not; list the layers instead, e.g. "
                       "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]")


def resolve_targets(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Paths of the layers ``cfg`` adapts, in model order.

    Raises:
        HfxError: no target given for an architecture without peft's default targets, nothing matches (the
            message lists the layers that can take LoRA and the nearest name), every match is excluded, or a
            match is a module LoRA cannot adapt.
    """
    targets = cfg.target_modules
    if targets is None:
        model_type = getattr(getattr(model, "config", None), "model_type", "")
        if model_type not in DEFAULT_TARGETS:
            raise HfxError(f"lora.target_modules is not set and hfx has no default for model type {model_type!r}; "
                           f"set it, e.g. lora.target_modules=[...] from: {', '.join(candidate_names(model))}")
        targets = DEFAULT_TARGETS[model_type]
    elif isinstance(targets, str) and targets.lower() == "all-linear":
        _refuse_fused_experts(model)
        targets = _all_linear(model)
    inside, saved = internal_prefixes(model), cfg.modules_to_save or []
    found, excluded = [], []
    for key, _ in model.named_modules():
        if not key or key.startswith(inside) or not name_matches(targets, key):
            continue
        if (cfg.exclude_modules and name_matches(cfg.exclude_modules, key)) or any(
                re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", key) for m in saved):
            excluded.append(key)
        elif _layer_index_ok(cfg, key):
            found.append(key)
    if not found:
        names = candidate_names(model)
        hint = did_you_mean(targets, names) if isinstance(targets, str) else next(
            (h for t in targets if (h := did_you_mean(t, names))), "")
        why = " (every match is excluded by exclude_modules or modules_to_save)" if excluded else ""
        raise HfxError(f"no layer of {type(model).__name__} matches lora.target_modules={cfg.target_modules!r}{why}"
                       f"{hint}; layers that can take LoRA: {', '.join(names)}")
    return found


def _check(model: nn.Module, key: str, cfg: LoraConfig, r: int) -> None:
    module = model.get_submodule(key)
    if not isinstance(module, (*_SUPPORTED, LoraLayer)):
        raise HfxError(f"lora.target_modules matches {key!r} ({type(module).__name__}), which LoRA cannot adapt: "
                       f"name Linear, Conv1D or Embedding layers instead, e.g. {', '.join(candidate_names(model)[:6])}")
    layer = module if isinstance(module, LoraLayer) else _wrap(module)
    if r > layer.max_rank():
        raise HfxError(f"lora.r={r} is larger than layer {key!r} allows ({layer.in_features} in, {layer.out_features} "
                       f"out: B @ A has rank at most {layer.max_rank()}); lower lora.r or set lora.rank_pattern for it")


def _wrap(module: nn.Module) -> LoraLayer:
    if isinstance(module, nn.Embedding):
        return LoraEmbedding(module)
    return LoraLinear(module, fan_in_fan_out=isinstance(module, Conv1D))  # Conv1D stores (in, out)


def _replace(model: nn.Module, key: str, new: nn.Module) -> None:
    parent, _, child = key.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def inject(model: nn.Module, cfg: LoraConfig, adapter_name: str) -> list[str]:
    """Add adapter ``adapter_name`` to every layer ``cfg`` targets; return their paths."""
    keys = resolve_targets(model, cfg)
    ranks = {k: _pattern_value(cfg.rank_pattern, k, cfg.r) for k in keys}
    alphas = {k: float(_pattern_value(cfg.alpha_pattern, k, cfg.lora_alpha)) for k in keys}
    for key in keys:  # all checks first: an error leaves the model as it was
        _check(model, key, cfg, ranks[key])
    for key in keys:
        module = model.get_submodule(key)
        layer = module if isinstance(module, LoraLayer) else _wrap(module)
        layer.path = key
        r, alpha = ranks[key], alphas[key]
        layer.add_adapter(adapter_name, r, alpha, cfg.scaling(r, alpha), cfg.lora_dropout,
                          cfg.init_lora_weights, cfg.use_dora)
        if layer is not module:
            _replace(model, key, layer)
    return keys


def modules_to_save_paths(model: nn.Module, names: list[str]) -> list[str]:
    """Paths of the modules named in ``names`` (``modules_to_save``).

    Raises:
        HfxError: a name that matches no module of the model, or a module whose weight another module shares
            (its copy would train alone and untie them silently; :mod:`hfx.sharing`).
    """
    inside = internal_prefixes(model)
    keys = [k for k, _ in model.named_modules() if k and not k.startswith(inside) and selects_to_save(names, k)]
    for name in names:
        if not any(selects_to_save([name], k) for k in keys):
            options = [k.rsplit(".", 1)[-1] for k, _ in model.named_modules() if k]
            raise HfxError(f"lora.modules_to_save names {name!r}, but {type(model).__name__} has no such module"
                           f"{did_you_mean(name, options)}; give the name of a module to train in full")
    fresh = [k for k in keys if not isinstance(model.get_submodule(k), ModulesToSave)]
    check_not_shared(model, [f"{k}.{n}" for k in fresh for n, _ in model.get_submodule(k).named_parameters()],
                     "train a separate copy (modules_to_save) of",
                     "target the layer with LoRA instead, or untie the weights first "
                     "(model.config.tie_word_embeddings=False and clone the shared weight)")
    return keys


def wrap_modules_to_save(model: nn.Module, names: list[str], adapter_name: str) -> list[str]:
    """Give each module named in ``names`` a trainable copy for ``adapter_name``; return their paths.

    Raises:
        HfxError: as :func:`modules_to_save_paths`.
    """
    keys = modules_to_save_paths(model, names)
    for key in keys:
        module = model.get_submodule(key)
        if not isinstance(module, ModulesToSave):
            module = ModulesToSave(module, key)
            _replace(model, key, module)
        module.add_adapter(adapter_name)
    return keys
