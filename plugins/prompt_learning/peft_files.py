"""peft's prompt-learning adapter files, written and read strictly by ``prefix_tuning`` and ``prompt_tuning``.

The folder holds ``adapter_config.json`` (peft's config keys, ``inference_mode`` true) and
``adapter_model.safetensors`` whose tensor ``prompt_embeddings`` is what the prompt encoder produces (peft
0.21.2 ``peft/utils/save_and_load.py``, ``get_peft_model_state_dict``: a prompt-learning adapter saves the
encoder's output, not its parameters). Pickled ``adapter_model.bin`` files are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from hfx.errors import HfxError
from hfx.io import atomic_write_json, load_safetensors

__all__ = ["CONFIG_NAME", "EMBEDDINGS_KEY", "WEIGHTS_NAME", "adapter_config", "is_adapter", "read_adapter",
           "write_adapter"]

CONFIG_NAME, WEIGHTS_NAME, EMBEDDINGS_KEY = "adapter_config.json", "adapter_model.safetensors", "prompt_embeddings"


def adapter_config(model: nn.Module, peft_type: str, cfg: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The ``adapter_config.json`` of ``cfg``: peft's common keys, then ``cfg``'s values of ``fields``.

    ``inference_mode`` is true (as ``save_pretrained`` writes it), ``base_model_name_or_path`` is the model
    config's ``name_or_path`` (None when empty) and ``task_type`` the resolved one.
    """
    return {
        "peft_type": peft_type, "task_type": cfg.task_type, "inference_mode": True, "revision": None,
        "base_model_name_or_path": getattr(getattr(model, "config", None), "name_or_path", None) or None,
        **{k: getattr(cfg, k) for k in fields},
    }


def write_adapter(path: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (metadata ``{"format": "pt"}``) in ``path``.

    ``tensors`` of any shape (e.g. prompt tuning's (n, d) embeddings) are saved as float32 CPU copies.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in tensors.items()},
              str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    atomic_write_json(path / CONFIG_NAME, config)


def is_adapter(path: Path, peft_type: str) -> bool:
    """Whether ``path`` holds a peft adapter of ``peft_type`` (PREFIX_TUNING or PROMPT_TUNING): each plugin's
    ``can_load``."""
    file = Path(path) / CONFIG_NAME
    try:
        return file.is_file() and json.loads(file.read_text()).get("peft_type") == peft_type
    except (json.JSONDecodeError, AttributeError):
        return False


def read_adapter(path: Path, peft_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a peft prompt-learning adapter: its config and its tensors (``prompt_embeddings`` at least).

    ``prompt_embeddings`` is (n * s, d) for prompt tuning, (n, L * 2 * d) for prefix tuning (peft's layouts).

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


