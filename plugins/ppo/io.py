"""Save and load the value head that ``hfx.apply(model, "ppo")`` adds.

A folder holds ``ppo_value_head.safetensors`` (``summary.weight`` (1, H), ``summary.bias`` (1,)) and
``ppo_config.json`` (the PPO config). The policy's adapter is saved by the lora plugin beside it
(``hfx.save`` writes one sub-folder per applied plugin).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from hfx.errors import HfxError
from hfx.io import atomic_write_json, load_safetensors
from hfx.protocols import config_of
from hfx_plugins.ppo.apply import apply, value_head
from hfx_plugins.ppo.config import PPOConfig

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "can_load", "load", "save"]

WEIGHTS_NAME, CONFIG_NAME = "ppo_value_head.safetensors", "ppo_config.json"


def save(model: nn.Module, path: Path) -> None:
    """Write ``model``'s value head and PPO config under ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = config_of(model, "ppo") or PPOConfig()
    head = value_head(model)
    if head is not None:
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in head.state_dict().items()}
        save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    # PPOConfig's fields only: `hfx run` applies ppo with its run config (updates, prompts, ...), which load refuses.
    atomic_write_json(path / CONFIG_NAME, {f.name: getattr(cfg, f.name) for f in dataclasses.fields(PPOConfig)})


def can_load(path: Path) -> bool:
    """Whether ``path`` holds a saved PPO config (``ppo_config.json``; the value head file is optional)."""
    return (Path(path) / CONFIG_NAME).is_file()


def load(model: nn.Module, path: Path) -> tuple[nn.Module, PPOConfig]:
    """Add the saved value head to ``model`` (the base the policy was trained on) and return the config.

    Raises:
        HfxError: the head's shape does not fit the model's hidden size.
    """
    path = Path(path)
    cfg = PPOConfig(**json.loads((path / CONFIG_NAME).read_text()))
    if not (path / WEIGHTS_NAME).is_file():
        return model, cfg
    tensors = load_safetensors(path / WEIGHTS_NAME)
    hidden = getattr(model.config, "hidden_size", None)
    if tuple(tensors["summary.weight"].shape) != (1, hidden):
        raise HfxError(f"{path}: the value head reads {tensors['summary.weight'].shape[1]} features, the model's "
                       f"hidden size is {hidden}; load it onto the model it was trained with")
    apply(model, cfg)
    with torch.no_grad():
        value_head(model).load_state_dict(tensors)  # type: ignore[union-attr]
    return model, cfg
