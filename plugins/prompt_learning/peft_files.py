"""What the two prompt-learning plugins (``prefix_tuning``, ``prompt_tuning``) share: peft's adapter format,
the sizes peft reads from a model config, and the argument plumbing of their forward hooks.

Both plugins leave the model a transformers model: they add one trainable module (``model.prefix_encoder``
or ``model.prompt_encoder``) and forward pre-hooks that rewrite the model's inputs the way peft 0.21.2's
``PeftModelForCausalLM`` / ``PeftModelForSeq2SeqLM`` rewrite them (``peft/peft_model.py``). The files are
peft's: ``adapter_config.json`` and ``adapter_model.safetensors`` whose one tensor is ``prompt_embeddings``
(``peft/tuners/tuners_utils.py``, ``BasePromptEncoder``).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from hfx.errors import HfxError
from hfx.io import atomic_write_json, load_safetensors

__all__ = ["CONFIG_NAME", "EMBEDDINGS_KEY", "WEIGHTS_NAME", "bind_inputs", "cache_argument", "can_load", "extend_mask",
           "fill_sizes", "greedy_by_forward", "model_sizes", "read_adapter", "task_type_of", "write_adapter"]

CONFIG_NAME, WEIGHTS_NAME, EMBEDDINGS_KEY = "adapter_config.json", "adapter_model.safetensors", "prompt_embeddings"
_FAMILIES = "decoder language models (Llama, GPT-2, Mistral, Qwen2, ...) and encoder-decoder models (T5, BART, ...)"


def task_type_of(model: nn.Module, plugin: str) -> str:
    """peft's task type for ``model``: CAUSAL_LM (a ...ForCausalLM) or SEQ_2_SEQ_LM (an encoder-decoder LM).

    Raises:
        HfxError: any other model (an encoder such as BERT, a classifier, a bare backbone).
    """
    config = getattr(model, "config", None)
    name = type(model).__name__
    if config is not None and getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return "SEQ_2_SEQ_LM"
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "CAUSAL_LM"
    raise HfxError(f"{plugin} works on {_FAMILIES}; {name} is neither (load it with AutoModelForCausalLM or "
                   "AutoModelForSeq2SeqLM)")


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    return next((cfg[k] for k in keys if cfg.get(k) is not None), None)


def model_sizes(model: nn.Module, kv_heads: bool) -> dict[str, int]:
    """num_layers, token_dim, num_attention_heads and the real head_dim, as peft fills them from the config.

    Follows ``_prepare_prompt_learning_config`` (peft 0.21.2, ``utils/other.py``): layers from
    ``num_hidden_layers``/``num_layers``/``n_layer``, width from ``hidden_size``/``n_embd``/``d_model``, heads from
    ``num_attention_heads``/``n_head``/``num_heads``. With ``kv_heads`` (prefix tuning) and a config that has
    ``num_key_value_heads``, token_dim becomes head_dim x KV heads and the heads the KV heads (grouped-query
    attention: the cache holds the KV heads only).
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cfg = config.to_dict()
    layers = getattr(config, "num_hidden_layers", None) or _first(cfg, "num_layers", "n_layer")
    dim = _first(cfg, "hidden_size", "n_embd", "d_model")
    heads = _first(cfg, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
    if not (layers and dim and heads):
        raise HfxError(f"cannot read the layer count, width and heads of {type(model).__name__} from its config; "
                       "set num_layers, token_dim and num_attention_heads")
    head_dim = _first(cfg, "head_dim", "d_kv") or dim // heads
    if kv_heads and cfg.get("num_key_value_heads"):
        dim, heads = head_dim * cfg["num_key_value_heads"], cfg["num_key_value_heads"]
    return {"num_layers": int(layers), "token_dim": int(dim), "num_attention_heads": int(heads), "head_dim": int(head_dim)}


def fill_sizes(model: nn.Module, cfg: Any, plugin: str, kv_heads: bool) -> tuple[dict[str, int], dict[str, Any]]:
    """The sizes read from ``model`` and ``cfg``'s task type and sizes, the unset ones filled from them.

    As peft's ``_prepare_prompt_learning_config`` fills a prompt-learning config: ``task_type`` from the model
    (:func:`task_type_of`), ``num_layers``, ``token_dim`` and ``num_attention_heads`` from :func:`model_sizes`,
    ``num_transformer_submodules`` 2 for an encoder-decoder model and 1 for a decoder.

    Args:
        model: The model the plugin is applied to.
        cfg: A config with peft's fields ``task_type``, ``num_layers``, ``token_dim``, ``num_attention_heads``
            and ``num_transformer_submodules`` (None or "" when unset).
        plugin: The plugin's name, for the messages.
        kv_heads: As in :func:`model_sizes`.

    Returns:
        ``(sizes, fields)``: what :func:`model_sizes` read, and the fields to give ``dataclasses.replace(cfg, ...)``.

    Raises:
        HfxError: a model family prompt learning cannot serve, or a ``task_type`` the model does not have.
    """
    task = task_type_of(model, plugin)
    if cfg.task_type and cfg.task_type != task:
        raise HfxError(f"{plugin}.task_type is {cfg.task_type} but {type(model).__name__} is a {task} model")
    sizes = model_sizes(model, kv_heads)
    filled: dict[str, Any] = {k: getattr(cfg, k) if getattr(cfg, k) is not None else sizes[k]
                              for k in ("num_layers", "token_dim", "num_attention_heads")}
    filled["num_transformer_submodules"] = cfg.num_transformer_submodules or (2 if task == "SEQ_2_SEQ_LM" else 1)
    filled["task_type"] = task
    return sizes, filled


def bind_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's positional arguments named after ``module.forward``'s parameters, merged into ``kwargs``."""
    if not args:
        return dict(kwargs)
    names = [n for n, p in inspect.signature(module.forward).parameters.items()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return {**dict(zip(names, args, strict=False)), **kwargs}


def cache_argument(module: nn.Module) -> str:
    """The name ``module.forward`` takes its KV cache under: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def extend_mask(mask: torch.Tensor | None, n: int, needed: int, what: str) -> torch.Tensor | None:
    """Prepend ``n`` ones to a 2-D mask that covers the real tokens only, so it covers ``needed`` positions.

    A mask that already covers ``needed`` positions is returned as is; None stays None (all attended).

    Raises:
        HfxError: a mask of any other length, or not 2-D (a 4-D mask cannot be extended safely).
    """
    if mask is None:
        return None
    if mask.dim() == 2 and mask.shape[1] == needed - n:
        return torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)  # (B, n + T)
    if mask.dim() == 2 and mask.shape[1] == needed:
        return mask
    raise HfxError(f"{what} has shape {tuple(mask.shape)}; expected (batch, {needed - n}) for the real tokens "
                   f"(the {n} virtual tokens are added by hfx) or (batch, {needed}); pass a 2-D mask")


def write_adapter(path: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (metadata ``{"format": "pt"}``) in ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in tensors.items()},
              str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    atomic_write_json(path / CONFIG_NAME, config)


def can_load(path: Path, peft_type: str) -> bool:
    """Whether ``path`` holds a peft adapter of ``peft_type`` (PREFIX_TUNING or PROMPT_TUNING)."""
    file = Path(path) / CONFIG_NAME
    try:
        return file.is_file() and json.loads(file.read_text()).get("peft_type") == peft_type
    except (json.JSONDecodeError, AttributeError):
        return False


def read_adapter(path: Path, peft_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a peft prompt-learning adapter: its config and its tensors (``prompt_embeddings`` at least).

    Raises:
        HfxError: no config, another method's config, a pickle instead of safetensors, a truncated or corrupted
            weights file, or no ``prompt_embeddings``.
    """
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise HfxError(f"no {CONFIG_NAME} in {str(path)!r}; give a folder written by hfx.save or peft's save_pretrained")
    raw = json.loads((path / CONFIG_NAME).read_text())
    if raw.get("peft_type") != peft_type:
        raise HfxError(f"{path} holds a {raw.get('peft_type')} adapter, not {peft_type}; load it with the matching plugin")
    if not (path / WEIGHTS_NAME).is_file():
        pickled = (path / "adapter_model.bin").is_file()
        raise HfxError(f"no {WEIGHTS_NAME} in {str(path)!r}" + (
            "; it holds adapter_model.bin, a pickle, which hfx does not load (it can run code): re-save it with "
            "peft's save_pretrained(..., safe_serialization=True)" if pickled else ""))
    tensors = load_safetensors(path / WEIGHTS_NAME)
    if EMBEDDINGS_KEY not in tensors:
        raise HfxError(f"{path / WEIGHTS_NAME} has no {EMBEDDINGS_KEY!r} tensor (keys: {', '.join(sorted(tensors))}); "
                       "it is not a peft prompt-learning adapter")
    return raw, tensors


@torch.no_grad()
def greedy_by_forward(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int,
                      start_token_id: int | None = None) -> torch.Tensor:
    """Greedy decoding by full forward passes, no cache: argmax of the last position, appended, ``steps`` times.

    What ``generate(do_sample=False)`` must reproduce; a prompt or prefix dropped in one of ``generate``'s
    cached steps makes the two differ. ``inputs`` holds one unpadded batch (``input_ids``, ``attention_mask``).
    Encoder-decoder models (``start_token_id`` given) decode from ``[[start_token_id]]`` with the encoder input
    fixed; decoder models extend ``input_ids``.

    Returns:
        ``(B, T + steps)`` for decoder models, ``(B, 1 + steps)`` for encoder-decoder models, like ``generate``.
    """
    ids = inputs["input_ids"]
    out = ids if start_token_id is None else torch.full((ids.shape[0], 1), start_token_id, dtype=ids.dtype)
    for _ in range(steps):
        if start_token_id is None:
            logits = model(input_ids=out, attention_mask=torch.ones_like(out)).logits  # (B, T, V)
        else:
            logits = model(input_ids=ids, attention_mask=inputs["attention_mask"], decoder_input_ids=out).logits
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out
