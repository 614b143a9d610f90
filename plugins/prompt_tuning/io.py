"""Save and load prompts in peft's format, strictly.

The folder holds ``adapter_config.json`` (peft's ``PromptTuningConfig`` keys, ``inference_mode`` true) and
``adapter_model.safetensors`` whose one tensor ``prompt_embeddings`` is ``(n * s, d)`` (``s`` = 2 for
encoder-decoder models, as peft stores it). A TEXT-initialised prompt whose tokenizer has no name is written as
RANDOM: peft refuses TEXT without ``tokenizer_name_or_path``, and the init no longer matters once the prompt
is saved.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.prompt_learning import (
    EMBEDDINGS_KEY,
    adapter_config,
    is_adapter,
    read_adapter,
    task_type_of,
    write_adapter,
)
from hfx_plugins.prompt_tuning.apply import apply, get_encoder
from hfx_plugins.prompt_tuning.config import PromptTuningConfig

__all__ = ["can_load", "load", "save"]

_FIELDS = ("num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers",
           "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path", "tokenizer_kwargs")


def save(model: nn.Module, path: Path) -> None:
    """Write the model's prompt under ``path`` in peft's format."""
    enc = get_encoder(model)
    cfg: PromptTuningConfig = enc.config
    config = adapter_config(model, "PROMPT_TUNING", cfg, _FIELDS)
    if cfg.prompt_tuning_init == "TEXT" and not cfg.tokenizer_name_or_path:
        config["prompt_tuning_init"] = "RANDOM"
    with torch.no_grad():
        write_adapter(Path(path), config, {EMBEDDINGS_KEY: enc()})  # (n * s, d)


def can_load(path: Path) -> bool:
    """Whether ``path`` holds a peft adapter with ``"peft_type": "PROMPT_TUNING"`` in its config."""
    return is_adapter(Path(path), "PROMPT_TUNING")


def load(model: nn.Module, path: Path) -> tuple[nn.Module, PromptTuningConfig]:
    """Add the prompt saved under ``path`` (by hfx or peft) to ``model``; the tensor must fit exactly.

    Raises:
        HfxError: not a prompt-tuning adapter, a pickle, an extra tensor, or a prompt whose shape does not fit the
            model's embeddings (naming the embedding layer and both shapes).
    """
    folder = Path(path)
    raw, tensors = read_adapter(folder, "PROMPT_TUNING")
    prompt = tensors.pop(EMBEDDINGS_KEY)
    if tensors:
        raise HfxError(f"{folder}: unexpected tensor {sorted(tensors)[0]!r} beside prompt_embeddings; not a prompt adapter")
    cfg = PromptTuningConfig(**{k: raw[k] for k in _FIELDS if raw.get(k) is not None},
                             task_type=raw.get("task_type") or "")
    task = task_type_of(model, "prompt_tuning")
    words = model.get_input_embeddings()
    rows = cfg.num_virtual_tokens * (cfg.num_transformer_submodules or (2 if task == "SEQ_2_SEQ_LM" else 1))
    if tuple(prompt.shape) != (rows, words.weight.shape[1]):
        name = next(n for n, m in model.named_modules() if m is words)
        raise HfxError(f"{folder}: prompt_embeddings has shape {tuple(prompt.shape)} but {type(model).__name__} needs "
                       f"{(rows, words.weight.shape[1])} (num_virtual_tokens x submodules, and the width of its input "
                       f"embeddings {name!r}, {tuple(words.weight.shape)}); load the prompt onto the base model it "
                       "was trained on")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG alone
        apply(model, cfg, initialise=False)
    enc = get_encoder(model)
    with torch.no_grad():
        enc.embedding.weight.copy_(prompt.to(enc.embedding.weight.dtype))
    return model, dataclasses.replace(enc.config)
