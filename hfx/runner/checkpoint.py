"""Training checkpoints in safe formats only (safetensors and JSON), written atomically.

A checkpoint folder ``checkpoints/step-000050/`` holds:

- ``model.safetensors``: the trainable parameters and the buffers (frozen weights are rebuilt by setup);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensors and its other state;
- ``scheduler.json``: the learning-rate scheduler's state;
- ``rng-<rank>.safetensors`` + ``rng-<rank>.json``: every random generator of each process;
- ``state.json``: the optimizer step it was taken at, and the SHA-256 of every other file.

No pickle is written or read, so a checkpoint from elsewhere cannot run code when loaded. A file that is
missing, truncated or changed since it was written (its digest differs) is a one-line error naming it.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json, load_safetensors

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint", "verify_checkpoint"]


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # clone(): tied weights share storage, which safetensors refuses to write twice.
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if k not in frozen}


def _optimizer_split(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, slots in state["state"].items():
        rest["state"][str(idx)] = {}
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest["state"][str(idx)][name] = value
    return tensors, rest


def _optimizer_join(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in rest["state"].items()}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state()}, {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block, then put back the python, numpy and torch (CPU and CUDA) random states it found.

    For work nested inside a run that seeds and draws on its own (a model trained on the way, as ppo's reward
    model): the outer run then draws the same numbers whether that work ran or was read from a cache.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
            yield  # fork_rng puts back torch's CPU and CUDA states
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _set_rng_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    py = rest["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = rest["numpy"]
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]))


def save_checkpoint(
    folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    rank: int = 0, world_size: int = 1, keep: int = 2,
    states: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` under ``folder/step-XXXXXX`` atomically; keep the newest ``keep``.

    ``states``: the model's trainable state and the optimizer's state dict already gathered (a sharded model:
    :func:`hfx.runner.fsdp.gathered_state`); by default they are read from ``model`` and ``optimizer``.
    """
    path = folder / f"step-{step:06d}"
    model_state, optimizer_state = states or (_trainable_state(model), optimizer.state_dict())
    with atomic_dir(path) as tmp:
        save_file(model_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tensors, rest = _optimizer_split(optimizer_state)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        atomic_write_json(tmp / "optimizer.json", rest)
        atomic_write_json(tmp / "scheduler.json", scheduler.state_dict())
        rng_t, rng_rest = _rng_state()
        save_file(rng_t, str(tmp / f"rng-{rank}.safetensors"))
        atomic_write_json(tmp / f"rng-{rank}.json", rng_rest)
        digests = {f.name: _sha256(f) for f in sorted(tmp.iterdir())}
        atomic_write_json(tmp / "state.json", {"step": step, "world_size": world_size, "sha256": digests})
    for old in sorted(folder.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    # A run killed while writing a checkpoint leaves its temporary folder (never read: it has no step-* name);
    # only the main process writes here, so any other one is stale.
    for stale in folder.glob(".step-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under ``folder`` (temporary folders are ignored)."""
    done = [p for p in sorted(folder.glob("step-*")) if (p / "state.json").is_file()]
    return done[-1] if done else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _damaged(path: Path, what: str) -> HfxError:
    return HfxError(f"checkpoint file {str(path)!r} {what}; delete the folder {str(path.parent)!r} to resume from "
                    "the checkpoint before it, or start a new run")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise _damaged(path, "is missing") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(path, f"is truncated or corrupted ({str(err).splitlines()[0]})") from err


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check every file of a checkpoint against the digests in its ``state.json``; return that state."""
    state = _json(path / "state.json")
    for name, expected in state.get("sha256", {}).items():  # checkpoints written before digests have none
        if not (path / name).is_file():
            raise _damaged(path / name, "is missing")
        if _sha256(path / name) != expected:
            raise _damaged(path / name, "has changed since it was written (SHA-256 differs)")
    return state


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0,
                    restore: Callable[..., tuple[list[str], list[str]]] | None = None) -> int:
    """Restore a checkpoint written by :func:`save_checkpoint`; return its step.

    ``restore(model, optimizer, model_state, optimizer_state) -> (missing, unexpected)`` puts the states back
    where ``load_state_dict`` cannot (a sharded model: :func:`hfx.runner.fsdp.restore_state`).

    Raises:
        HfxError: a file is missing, truncated or changed, or the checkpoint does not fit ``model``.
    """
    state = verify_checkpoint(path)
    optimizer_state = _optimizer_join(load_safetensors(path / "optimizer.safetensors"), _json(path / "optimizer.json"))
    try:
        if restore is not None:
            missing, unexpected = restore(model, optimizer, load_safetensors(path / "model.safetensors"), optimizer_state)
        else:
            missing, unexpected = model.load_state_dict(load_safetensors(path / "model.safetensors"), strict=False)
    except RuntimeError as err:  # shapes differ: another model or another plugin config
        raise HfxError(f"checkpoint {str(path)!r} does not fit the model: {str(err).splitlines()[-1].strip()}; "
                       "resume with the config it was written with") from err
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if unexpected or set(missing) - frozen:
        raise HfxError(f"checkpoint {str(path)!r} does not fit the model: missing {sorted(set(missing) - frozen)[:5]}, "
                       f"unexpected {unexpected[:5]}; resume with the config it was written with")
    if restore is None:
        optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(_json(path / "scheduler.json"))
    # Only the main process writes checkpoints; other ranks of a DDP run start from its generators.
    who = rank if (path / f"rng-{rank}.safetensors").is_file() else 0
    _set_rng_state(load_safetensors(path / f"rng-{who}.safetensors"), _json(path / f"rng-{who}.json"))
    return int(state["step"])
