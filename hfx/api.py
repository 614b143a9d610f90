"""The drop-in Python API: ``hfx.apply``, ``hfx.save`` and ``hfx.load``.

    model = AutoModelForCausalLM.from_pretrained(...)
    model = hfx.apply(model, "lora", r=8, target_modules=["q_proj", "v_proj"])   # still a transformers model
    trainer = transformers.Trainer(model=model, ...)                            # train as usual
    hfx.save(model, "out/adapter")                                              # peft's format for LoRA

Each applied plugin is recorded on the model (:func:`hfx.protocols.record`), so :func:`save` knows what to write:
one applied plugin writes its own format at ``path``; several write one sub-folder each, in order, plus
``hfx_plugins.json`` listing them, which :func:`load` reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from hfx import registry
from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json
from hfx.protocols import applied, record

__all__ = ["MANIFEST", "applied", "apply", "load", "save"]

MANIFEST = "hfx_plugins.json"


def apply(model: nn.Module, plugin: str, cfg: Any = None, **fields: Any) -> nn.Module:
    """Apply plugin ``plugin`` to ``model`` with its config fields given as keyword arguments.

    Changes ``model`` in place and returns it (for transformers models it is still a transformers model,
    usable by ``transformers.Trainer``). ``cfg`` may be a ready config object instead of keyword fields.
    Keyword arguments the plugin lists in ``Plugin.apply_inputs`` are data, not config (e.g. quant's
    ``calibration=``): they go to the plugin's apply function and are not recorded.

    Raises:
        HfxError: an unknown plugin, a plugin without a drop-in ``apply``, a field only ``hfx run`` uses, an
            unknown field or a wrong value, or both ``cfg`` and keyword fields; the plugin's own refusal, led by
            the plugins already applied when there are any (``hfx.apply(model, 'qat') after quant: ...``).
    """
    p = registry.get(plugin)
    if p.apply is None:
        raise HfxError(f"plugin {plugin!r} has no drop-in apply(); use `hfx run plugin={plugin}` or its Python API "
                       f"({p.description})")
    inputs = {k: fields.pop(k) for k in list(fields) if k in p.apply_inputs}
    if cfg is None:
        cfg = p.make_config(**fields)
    elif fields:
        raise HfxError("give either a config object or keyword fields to hfx.apply, not both")
    before = [name for name, _ in applied(model)]
    try:
        out = registry.resolve(p.apply)(model, cfg, **inputs)  # the plugin's own function, called directly
    except HfxError as err:
        lead = f"hfx.apply(model, {plugin!r}) after {' + '.join(before)}"
        raise _naming(err, lead, [*before, p.name]) from err
    record(out, p.name, cfg, replace=p.record_once)
    return out


def _naming(err: HfxError, lead: str, involved: list[str]) -> HfxError:
    """``err`` led by ``lead``, which names the plugins involved, when there are several: a refusal of one plugin
    on a model another changed (lora on an Embedder, qat on quant's layers) names the pair, so the user knows
    which two do not compose. One plugin alone, or a more specific error class (a full disk): ``err`` unchanged."""
    if len(set(involved)) < 2 or type(err) is not HfxError:
        return err
    return HfxError(f"{lead}: {err}")


def save(obj: nn.Module, path: str | Path) -> Path:
    """Write what the applied plugins add to ``obj`` under ``path`` (atomically), in reference formats.

    With no plugin applied, a transformers model is written whole with ``save_pretrained`` (safetensors).
    One saving plugin writes straight into ``path``; several each write a sub-folder named after the plugin,
    listed in ``hfx_plugins.json``.

    Returns:
        ``path``, complete (the folder is swapped into place only once everything is written).

    Raises:
        HfxError: nothing to save (no plugin applied and no ``save_pretrained``), a plugin of the record that
            is no longer installed, or a full disk (the previous folder, if any, is left intact); with several
            plugins applied, a plugin's refusal is led by their names (``hfx.save of a model with quant + reward``).
    """
    path = Path(path)
    steps = [(registry.get(name), cfg) for name, cfg in applied(obj)]
    savers = [(p, cfg) for p, cfg in steps if p.save is not None]
    try:
        _save(obj, path, savers)
    except HfxError as err:
        names = [name for name, _ in applied(obj)]
        raise _naming(err, f"hfx.save of a model with {' + '.join(names)}", names) from err
    return path


def _save(obj: nn.Module, path: Path, savers: list[tuple[registry.Plugin, Any]]) -> None:
    with atomic_dir(path) as tmp:
        if not savers:
            if not hasattr(obj, "save_pretrained"):
                raise HfxError(f"nothing to save: {type(obj).__name__} has no plugin applied and no save_pretrained")
            obj.save_pretrained(tmp)
        elif len(savers) == 1:
            savers[0][0].save(obj, tmp)  # type: ignore[misc]
        else:
            for p, _ in savers:
                p.save(obj, tmp / p.name)  # type: ignore[misc]
            atomic_write_json(tmp / MANIFEST, {"plugins": [p.name for p, _ in savers]})


def load(model: nn.Module, path: str | Path) -> nn.Module:
    """Restore onto ``model`` what :func:`save` wrote at ``path``; the format is detected.

    A folder with ``hfx_plugins.json`` is loaded plugin by plugin in the listed order; otherwise the first
    installed plugin whose ``can_load`` recognises the files loads it (e.g. a peft adapter folder).

    Returns:
        The model with the saved plugins applied and recorded.

    Raises:
        HfxError: a missing path, a truncated or corrupted manifest or weights file, files no installed plugin
            recognises, or a mismatch the plugin's ``load`` reports (shapes, target modules).
    """
    path = Path(path)
    if not path.exists():
        raise HfxError(f"path {str(path)!r} does not exist; give the folder written by hfx.save")
    if (path / MANIFEST).is_file():
        try:
            names = json.loads((path / MANIFEST).read_text())["plugins"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise HfxError(f"{str(path / MANIFEST)!r} is truncated or corrupted ({type(err).__name__}); "
                           "save the model again with hfx.save") from err
        for name in names:
            model = _load_one(registry.get(name), model, path / name)
        return model
    for p in registry.iter_plugins():
        if p.load is not None and p.can_load is not None and p.can_load(path):
            return _load_one(p, model, path)
    raise HfxError(
        f"no installed plugin recognises the files in {str(path)!r}; "
        f"expected a folder written by hfx.save (plugins: {', '.join(registry.available())})"
    )


def _load_one(p: registry.Plugin, model: nn.Module, path: Path) -> nn.Module:
    from safetensors import SafetensorError

    try:
        out, cfg = p.load(model, path)  # type: ignore[misc]
    except (SafetensorError, ValueError, UnicodeDecodeError) as err:  # ValueError: json.JSONDecodeError too
        if isinstance(err, HfxError):
            raise
        bad = _damaged_file(path)
        if bad is None:
            raise
        raise HfxError(f"cannot load {p.name} from {str(path)!r}: {bad}; save it again with hfx.save") from err
    record(out, p.name, cfg, replace=p.record_once)
    return out


def _damaged_file(path: Path) -> str | None:
    """Name the first file under ``path`` that is not a complete safetensors or JSON file, or None."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(path.rglob("*")):
        try:
            if f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as fh:  # header, and every tensor inside the file
                    fh.keys()
            elif f.suffix == ".json":
                json.loads(f.read_text())
        except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as err:
            return f"file {str(f)!r} is truncated or corrupted ({(str(err).splitlines() or [''])[0][:120]})"
    return None
