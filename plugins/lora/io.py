"""Save and load adapters in peft's format, strictly.

A folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (metadata ``{"format": "pt"}``) with
peft's keys: ``base_model.model.<layer>.lora_A.weight`` (r, in), ``.lora_B.weight`` (out, r),
``.lora_magnitude_vector`` (out,), ``.lora_embedding_A`` / ``_B``, full weights of ``modules_to_save``
modules, and biases when ``bias`` is not none. The first adapter is written at the root (what
``PeftModel.from_pretrained(base, path)`` reads), every other one in ``<path>/<name>/`` (peft's layout for
named adapters); ``hfx_lora.json`` records the names and the active adapters.

Where hfx goes beyond peft:

- the config holds only keys that peft 0.10.0 accepts (see :data:`OLD_PEFT_KEYS`): peft before 0.14 raises
  ``TypeError`` on any key it does not know, and ``target_modules`` is written as the exact layers adapted
  (so ``exclude_modules`` or ``layers_to_transform`` need not be written);
- loading is strict: a missing or unexpected key, or a tensor whose shape does not fit, is an HfxError
  naming the layer and both shapes, and the model is left as it was; pickle (``.bin``) files are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from hfx.errors import HfxError, did_you_mean
from hfx.io import atomic_write_json, load_safetensors
from hfx.protocols import is_quantized
from hfx_plugins.lora.apply import add_adapter
from hfx_plugins.lora.config import LoraConfig
from hfx_plugins.lora.embedding import LoraEmbedding
from hfx_plugins.lora.inject import internal_prefixes, name_matches
from hfx_plugins.lora.layer import LoraLayer, LoraLinear
from hfx_plugins.lora.model import delete_adapter, get_state, set_adapter
from hfx_plugins.lora.peft_config import config_from_peft, task_type_of, to_peft_config
from hfx_plugins.lora.trainable import ModulesToSave
from hfx_plugins.lora.vocab import check_dependencies, dependencies, embedding_rows, embedding_state

__all__ = ["CONFIG_NAME", "MANIFEST", "PREFIX", "WEIGHTS_NAME", "adapter_state_dict", "can_load", "load",
           "load_adapter", "save"]

PREFIX = "base_model.model."
CONFIG_NAME, WEIGHTS_NAME, MANIFEST = "adapter_config.json", "adapter_model.safetensors", "hfx_lora.json"


def adapter_state_dict(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """peft's checkpoint keys of adapter ``name`` -> the live tensors of ``model`` they hold.

    Shapes as peft saves them: ``lora_A.weight`` (r, in), ``lora_B.weight`` (out, r); embeddings' ``lora_embedding_A``
    (r, vocab) and ``lora_embedding_B`` (dim, r); other tensors their module's own.
    """
    cfg = get_state(model).configs[name]
    out: dict[str, torch.Tensor] = {}
    for key, module in model.named_modules():
        at = PREFIX + key
        if isinstance(module, LoraLinear) and name in module.r:
            out[f"{at}.lora_A.weight"] = module.lora_A[name].weight  # (r, in)
            out[f"{at}.lora_B.weight"] = module.lora_B[name].weight  # (out, r)
            if name in module.lora_magnitude_vector:  # peft saves DoRA's m without its ".weight"
                out[f"{at}.lora_magnitude_vector"] = module.lora_magnitude_vector[name].weight  # (out,)
        elif isinstance(module, LoraEmbedding) and name in module.r:
            out[f"{at}.lora_embedding_A"] = module.lora_embedding_A[name]  # (r, vocab)
            out[f"{at}.lora_embedding_B"] = module.lora_embedding_B[name]  # (dim, r)
            if name in module.lora_magnitude_vector:
                out[f"{at}.lora_magnitude_vector"] = module.lora_magnitude_vector[name].weight  # (dim,)
        elif isinstance(module, ModulesToSave) and name in module.modules_to_save:
            for k, v in module.modules_to_save[name].state_dict().items():
                out[f"{at}.{k}"] = v
    if cfg.bias == "all":
        inside = tuple(f"{k}." for k, m in model.named_modules() if isinstance(m, ModulesToSave))
        out.update({PREFIX + k: v for k, v in model.state_dict().items()
                    if (k == "bias" or k.endswith(".bias")) and not k.startswith(inside)})
    for key, module in model.named_modules():  # lora_only biases of layers adapted by this adapter
        if isinstance(module, LoraLayer) and cfg.bias == "lora_only" and module.bias is not None and name in module.r:
            out[f"{PREFIX}{key}.base_layer.bias"] = module.bias
    return out


def _written_targets(model: nn.Module, name: str) -> list[str]:
    """The layers carrying ``name``, as short names when those pick exactly these layers, else full paths."""
    paths = [k for k, m in model.named_modules() if isinstance(m, LoraLayer) and name in m.r]
    short = sorted({p.rsplit(".", 1)[-1] for p in paths})
    inside = internal_prefixes(model)
    picked = [k for k, _ in model.named_modules() if k and not k.startswith(inside) and name_matches(short, k)]
    return short if picked == paths else paths


def save(model: nn.Module, path: Path) -> None:
    """Write every adapter of ``model`` under ``path`` in peft's format (first at the root, others in sub-folders).

    Raises:
        HfxError: the model has no adapter, or an adapter is merged into a quantized base (QLoRA): the plugin
            that saves that base (quant, written first by ``hfx.save``) would hold the update too, and loading
            base and adapter would apply it twice.
    """
    state = get_state(model)
    merged = [k for k, m in model.named_modules()
              if isinstance(m, LoraLayer) and m.merged_adapters and is_quantized(m.base_layer)]
    if merged:
        raise HfxError(f"LoRA adapters are merged into the quantized base ({merged[0]}); call unmerge_adapter(model) "
                       "before hfx.save, or merge_and_unload(model) to save the merged quantized model alone")
    path = Path(path)
    folders: dict[str, str] = {}
    for i, name in enumerate(state.configs):
        folder = path if i == 0 else path / name
        folder.mkdir(parents=True, exist_ok=True)
        # clone(): tied tensors share storage, which safetensors refuses to write twice
        # The embeddings too when the vocabulary was resized or they trained (peft's save_embedding_layers="auto")
        live = {**embedding_state(model, PREFIX), **adapter_state_dict(model, name)}
        tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in live.items()}
        save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = state.configs[name]
        peft_cfg = to_peft_config(cfg, _written_targets(model, name), cfg.task_type or task_type_of(model),
                                  getattr(getattr(model, "config", None), "name_or_path", None) or None)
        atomic_write_json(folder / CONFIG_NAME, peft_cfg)
        folders[name] = "." if i == 0 else name
    atomic_write_json(path / MANIFEST, {"adapters": folders, "active": state.active,
                                        "embedding_rows": embedding_rows(model), "depends_on": dependencies(model)})


def can_load(path: Path) -> bool:
    """Whether ``path`` holds a peft LoRA adapter (``adapter_config.json``, peft_type LORA or unset)."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        return False
    try:
        return json.loads(file.read_text()).get("peft_type", "LORA") == "LORA"
    except (json.JSONDecodeError, AttributeError):
        return False


def _folders(path: Path) -> tuple[dict[str, Path], list[str]]:
    """Adapter name -> folder, and the active adapters: from hfx's manifest, else peft's layout."""
    if (path / MANIFEST).is_file():
        manifest = json.loads((path / MANIFEST).read_text())
        return {n: path / f for n, f in manifest["adapters"].items()}, list(manifest.get("active", []))
    found = {"default": path} if (path / CONFIG_NAME).is_file() else {}
    found.update({d.name: d for d in sorted(path.iterdir()) if d.is_dir() and (d / CONFIG_NAME).is_file()})
    if not found:
        raise HfxError(f"no {CONFIG_NAME} in {str(path)!r}; give a folder written by hfx.save or peft's save_pretrained")
    return found, list(found)[:1]


def load(model: nn.Module, path: Path) -> tuple[nn.Module, LoraConfig]:
    """Load every adapter saved under ``path`` onto ``model`` (the base it was trained on), strictly."""
    folders, active = _folders(Path(path))
    _check_vocabulary(model, Path(path), folders)
    _check_base(model, Path(path), folders)
    loaded: list[str] = []
    try:
        for name, folder in folders.items():
            load_adapter(model, folder, name)
            loaded.append(name)
    except BaseException:
        for name in reversed(loaded):  # leave the model as it was
            delete_adapter(model, name)
        raise
    set_adapter(model, [a for a in active if a in folders] or loaded[:1])
    return model, get_state(model).configs[loaded[0]]


def _check_vocabulary(model: nn.Module, path: Path, folders: dict[str, Path]) -> None:
    """Refuse a base whose embedding rows differ from those the adapter was saved with (hfx's manifest).

    Raises:
        HfxError: the rows differ, with what to do (resize, or the folder holds no embedding rows to restore).
    """
    manifest = path / MANIFEST
    saved = json.loads(manifest.read_text()).get("embedding_rows") if manifest.is_file() else None
    rows = embedding_rows(model)
    if saved is None or rows is None or saved == rows:
        return
    with_rows = False
    for folder in folders.values():  # a base tensor of `saved` rows next to the adapter: the embeddings
        with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
            with_rows |= any("lora_" not in k and f.get_slice(k).get_shape()[:1] == [saved] for k in f.keys())  # noqa: SIM118
    fix = (f"call model.resize_token_embeddings({saved}) first (the saved rows then replace the new ones)" if with_rows
           else "the folder holds no embedding rows, so the new tokens' rows cannot be restored: load onto the "
           "resized model the adapter was trained with")
    raise HfxError(f"{path}: the adapter was trained with {saved} embedding rows (tokens), this base has {rows}; {fix}")


def _check_base(model: nn.Module, path: Path, folders: dict[str, Path]) -> None:
    """Compare ``model`` with the digests hfx's manifest recorded (none in a folder peft wrote): see
    :func:`~hfx_plugins.lora.vocab.check_dependencies`. Base tensors the folders carry are restored, not compared."""
    manifest = path / MANIFEST
    recorded = json.loads(manifest.read_text()).get("depends_on") if manifest.is_file() else None
    if not recorded:
        return
    carried: set[str] = set()
    for folder in folders.values():
        if not (folder / WEIGHTS_NAME).is_file():
            continue  # load_adapter says what is wrong with the folder
        with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
            keys = [k.removeprefix(PREFIX) for k in f.keys() if "lora_" not in k]  # noqa: SIM118
        carried |= {k.rsplit(".", 1)[0].replace(".base_layer", "").replace(".original_module", "") for k in keys}
    check_dependencies(model, recorded, carried, path)


def load_adapter(model: nn.Module, folder: Path, adapter_name: str = "default") -> LoraConfig:
    """Load the single adapter in ``folder`` as ``adapter_name``; every tensor must fit, every key must be used.

    Returns:
        The adapter's config, read from ``adapter_config.json`` (peft's or hfx's).

    Raises:
        HfxError: no ``adapter_config.json`` or no safetensors weights (pickled ``.bin`` files are refused), a
            config hfx cannot represent, or a missing, unexpected or mis-shaped tensor (naming the layer and
            both shapes); the model is left as it was.
    """
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise HfxError(f"no {CONFIG_NAME} in {str(folder)!r}; give a folder written by hfx.save or peft")
    if not (folder / WEIGHTS_NAME).is_file():
        pickled = (folder / "adapter_model.bin").is_file()
        raise HfxError(f"no {WEIGHTS_NAME} in {str(folder)!r}" + (
            "; it holds adapter_model.bin, a pickle, which hfx does not load (it can run code): re-save the adapter "
            "with peft's save_pretrained(..., safe_serialization=True)" if pickled else ""))
    cfg = config_from_peft(json.loads((folder / CONFIG_NAME).read_text()), adapter_name, model, folder)
    tensors = load_safetensors(folder / WEIGHTS_NAME)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: do not move the caller's RNG
        add_adapter(model, cfg)
    try:
        _copy_strict(model, adapter_name, tensors, folder)
    except BaseException:
        delete_adapter(model, adapter_name)
        raise
    return get_state(model).configs[adapter_name]


def _layer_of(model: nn.Module, key: str) -> str:
    """The layer a checkpoint key belongs to, with its in/out sizes when it is a LoRA layer."""
    path = key.removeprefix(PREFIX).split(".lora_")[0].removesuffix(".base_layer.bias")
    try:
        m = model.get_submodule(path)
    except AttributeError:
        return repr(path)
    return f"{path!r} (in {m.in_features}, out {m.out_features})" if isinstance(m, LoraLayer) else repr(path)


@torch.no_grad()
def _copy_strict(model: nn.Module, name: str, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    expected = adapter_state_dict(model, name)
    own = {PREFIX + k: v for k, v in model.state_dict(keep_vars=True).items()}
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise HfxError(f"{folder}: {len(missing)} adapter tensors are missing from {WEIGHTS_NAME}, e.g. {missing[0]!r} "
                       f"(layer {_layer_of(model, missing[0])}); the adapter does not match its own config")
    targets: dict[str, Any] = {}
    for key, value in tensors.items():
        # peft may also save base tensors it changed (a resized embedding's base_layer.weight, biases)
        target = expected.get(key, own.get(key))
        if target is None:
            hint = did_you_mean(key, list(expected) + list(own))
            raise HfxError(f"{folder}: tensor {key!r} fits no parameter of {type(model).__name__}{hint}; "
                           "load the adapter onto the base model it was trained on")
        if tuple(value.shape) != tuple(target.shape):
            raise HfxError(f"{folder}: {key.removeprefix(PREFIX)} has shape {tuple(value.shape)} in the file but "
                           f"{tuple(target.shape)} in the model (layer {_layer_of(model, key)}); load the adapter "
                           "onto the base model it was trained on")
        targets[key] = target
    for key, target in targets.items():  # every shape checked before the first copy
        target.copy_(tensors[key].to(target.dtype))
