"""Atomic writes: nothing half-written is ever left where a finished file or folder is expected.

A folder is written under a temporary sibling name and renamed into place; a rename within one file
system is atomic, so a reader (or a resumed run) sees either the old folder or the complete new one.
Replacing an existing folder swaps the two in one ``renameat2(RENAME_EXCHANGE)`` call on Linux, so even a
``kill -9`` between two renames cannot leave the path empty. A full disk is reported as one line and
leaves the previous version in place. :func:`load_safetensors` reads a weights file or says, in one line,
which file is missing, truncated or corrupted; :func:`load_weights_strict` loads one into a module strictly.
:func:`write_config_marker` / :func:`read_config_marker` write and read the ``hfx_<plugin>.json`` that a
plugin's saved folder carries beside its weights (the config it was made with).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfx.errors import HfxError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DiskFullError", "atomic_dir", "atomic_write_json", "atomic_write_text", "cache_root", "config_marker",
           "has_config_marker", "load_safetensors", "load_weights_strict", "read_config_marker", "to_model_layout",
           "write_config_marker"]

_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def cache_root() -> Path:
    """hfx's cache folder: ``$HFX_CACHE``, default ``~/.cache/hfx`` (``~`` expanded).

    It holds the converted offline models (``models/``), the bf16 probe (``precision.json``), the compiled quant
    kernels and their choices (``kernels/``) and the reward models ``hfx run plugin=ppo`` trains (``ppo/``).
    """
    return Path(os.environ.get("HFX_CACHE", "~/.cache/hfx")).expanduser()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        swap = libc.renameat2
    except (OSError, AttributeError):
        return False
    return swap(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


class DiskFullError(HfxError, OSError):
    """The disk (or the file-size limit) filled up during an atomic write; the previous version is intact."""


def _is_disk_full(err: BaseException) -> bool:
    """An OSError of a full disk or file-size limit, or a library's wrapping of one (safetensors' "os error 28")."""
    if isinstance(err, DiskFullError):
        return False  # already reported, for an inner path
    if isinstance(err, OSError):
        return err.errno in _DISK_FULL
    text = str(err)
    return any(f"os error {code})" in text for code in _DISK_FULL) or "No space left on device" in text


def _disk_full(err: BaseException, path: Path) -> DiskFullError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else (str(err).splitlines() or [""])[0]
    return DiskFullError(f"disk full while writing {str(path)!r} ({reason}); nothing was replaced, the previous "
                    "version (if any) is intact: free space or write elsewhere, then retry")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` in one rename, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(err):
            raise _disk_full(err, path) from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() and _exchange(tmp, path):  # one atomic swap: path is never missing
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous version
        return
    old = None
    if path.exists():
        # No atomic swap here: move the previous version aside first (os.replace cannot replace a non-empty
        # folder); _recover() puts it back if the process dies before the next rename.
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _recover(path: Path) -> None:
    """Undo what a process killed mid-write left: put back a previous version it had moved aside, remove its
    temporary folder (named with its process id, so a live writer's is never touched)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*-*"):
        pid = stale.name.removeprefix(f".{path.name}.tmp-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    if path.exists():
        return
    for old in sorted(path.parent.glob(f".{path.name}.old-*")):
        os.replace(old, path)
        return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _is_disk_full(err):
            raise _disk_full(err, path) from err
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def load_safetensors(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Read a safetensors file; a missing, truncated or corrupted one is a one-line error naming it.

    safetensors checks the header and that every tensor lies inside the file, so truncation and a damaged
    header are caught here; damaged tensor *bytes* are not (the format has no checksum; hfx checkpoints add
    one, see :mod:`hfx.runner.checkpoint`).

    Args:
        path: The ``.safetensors`` file.
        device: Where the tensors go.

    Returns:
        ``{name: tensor}``.

    Raises:
        HfxError: the file is missing or is not a complete safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise HfxError(f"weights file {str(path)!r} does not exist; give the folder written by hfx.save")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise HfxError(f"weights file {str(path)!r} ({path.stat().st_size} bytes) is truncated or corrupted "
                       f"({reason}); write it again (hfx.save or a new run)") from err


def load_weights_strict(module: nn.Module, folder: str | Path, shape_fix: str, keys_fix: str,
                        name: str = "model.safetensors") -> None:
    """Load ``folder/name`` (what ``save_pretrained`` writes) into ``module``: every shape must fit, every key be used.

    A weight that ``save_pretrained`` left out because it is tied to one that was saved (``lm_head`` = the
    input embeddings, T5's shared embeddings) is not counted as missing: it shares that saved tensor's storage.
    A file in the family's checkpoint layout (what ``save_pretrained`` writes for Mixtral: one weight per expert)
    is first brought to the module's layout (:func:`to_model_layout`).

    Args:
        module: The module the weights were saved from (its ``state_dict`` keys).
        folder: The saved folder, named in the error.
        shape_fix: What to do about a weight of another shape (the end of that error's line).
        keys_fix: What to do about missing or unknown weights (the end of that error's line).
        name: The weights file in ``folder``.

    Raises:
        HfxError: the file is missing, truncated or corrupted; a saved weight has another shape than the
            module's (naming the weight and both shapes); or weights are missing from / unknown to the module.
    """
    weights = load_safetensors(Path(folder) / name)
    own = module.state_dict()
    if not set(weights) <= set(own):  # transformers 5 may have written the family's checkpoint layout
        weights = to_model_layout(module, weights)
    for key, tensor in weights.items():
        if key in own and own[key].shape != tensor.shape:
            raise HfxError(f"{key}: saved shape {tuple(tensor.shape)} does not fit the model's {tuple(own[key].shape)}; "
                           f"{shape_fix}")
    result = module.load_state_dict(weights, strict=False)
    state = module.state_dict()
    present = {t.data_ptr() for k, t in state.items() if k in weights}
    missing = [k for k in result.missing_keys if state[k].data_ptr() not in present]
    if missing or result.unexpected_keys:
        raise HfxError(f"weights in {folder} do not fit {type(module).__name__}: missing {missing[:4]}, "
                       f"unexpected {result.unexpected_keys[:4]}; {keys_fix}")


def to_model_layout(module: nn.Module, weights: dict[str, Any]) -> dict[str, Any]:
    """``weights`` in the checkpoint layout of ``module``'s family, renamed and fused into the module's own layout.

    transformers 5 keeps some families in memory in another layout than on disk: Mixtral's experts are two fused
    3-D parameters per layer (``mlp.experts.gate_up_proj`` (E, 2I, H), ``mlp.experts.down_proj``), while
    ``save_pretrained`` writes the original checkpoint's ``block_sparse_moe.experts.{e}.w1/w2/w3.weight`` (its
    ``revert_weight_conversion``). This applies the same conversion list forwards, as ``from_pretrained`` does
    (renamings, then at most one converter per key), with the list of the first ``PreTrainedModel`` in
    ``module`` (a bare backbone inside hfx's score head). Keys no conversion names are kept as they are; a module
    without conversions, or a transformers without this machinery, gets ``weights`` back unchanged.

    Args:
        module: The module the weights are for (its ``state_dict`` keys are the target layout).
        weights: ``{name: tensor}`` as read from the file.

    Returns:
        ``{name: tensor}`` with the module's names and shapes where a conversion applied.
    """
    import copy

    from transformers import PreTrainedModel

    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            PrefixChange,
            WeightConverter,
            dot_natural_key,
            rename_source_key,
        )
    except ImportError:  # a transformers without conversion mappings keeps one layout
        return weights
    pretrained = next((m for m in module.modules() if isinstance(m, PreTrainedModel)), None)
    if pretrained is None:
        return weights
    # save_pretrained reverts this list without the legacy renamings and PrefixChange (revert_weight_conversion)
    transforms = [t for t in get_model_conversion_mapping(pretrained, add_legacy=False)
                  if not isinstance(t, PrefixChange)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    out: dict[str, Any] = {}
    fused: dict[str, Any] = {}  # target key -> its own converter, collecting the source tensors in key order
    for key in sorted(weights, key=dot_natural_key):  # experts 0, 1, ..., 10 in numeric order
        new, pattern = rename_source_key(key, renamings, converters)
        if pattern is None:
            out[new] = weights[key]
            continue
        if new not in fused:
            fused[new] = copy.deepcopy(next(c for c in converters if pattern in c.source_patterns))
        fused[new].add_tensor(new, key, pattern, weights[key])
    for target, converter in fused.items():
        for name, tensor in converter.convert(target, model=pretrained, config=pretrained.config).items():
            out[name] = tensor[0] if isinstance(tensor, list) else tensor
    return out


def config_marker(plugin: str) -> str:
    """The name of the file that records ``plugin``'s config in a saved folder: ``hfx_<plugin>.json``."""
    return f"hfx_{plugin}.json"


def has_config_marker(folder: str | Path, plugin: str) -> bool:
    """Whether ``folder`` holds ``plugin``'s config marker (it was written by that plugin's save)."""
    return (Path(folder) / config_marker(plugin)).is_file()


def write_config_marker(folder: str | Path, plugin: str, cfg: Any, cls: type | None = None, **extra: Any) -> None:
    """Write ``folder/hfx_<plugin>.json`` atomically: the fields of ``cls`` (default ``type(cfg)``) read from ``cfg``.

    Passing the plugin's method config as ``cls`` leaves out what a run's config subclass adds (settings of
    ``hfx run`` alone, which do not shape the saved model). Without ``extra`` the file is the fields themselves;
    with it, ``{"config": fields, **extra}`` (e.g. quant's layer table), the two layouts earlier versions wrote.

    Raises:
        DiskFullError: the disk filled up; a previous marker is left intact.
    """
    values = dataclasses.asdict(cfg)
    fields = {f.name: values[f.name] for f in dataclasses.fields(cls or type(cfg))}
    atomic_write_json(Path(folder) / config_marker(plugin), {"config": fields, **extra} if extra else fields)


def read_config_marker(folder: str | Path, plugin: str, cls: type,
                       renamed: dict[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """Read what :func:`write_config_marker` wrote: ``(cls(**fields), the file's other entries)``.

    Keys that ``cls`` has no field for are dropped (a run's extra settings, or fields an earlier version had);
    ``renamed`` maps keys of earlier versions to today's field names (``{"symmetric": "sym"}``).

    Raises:
        HfxError: the marker is missing or is not a JSON object.
    """
    path = Path(folder) / config_marker(plugin)
    if not path.is_file():
        raise HfxError(f"{str(folder)!r} has no {path.name}: it was not written by hfx.save with the {plugin} plugin")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HfxError(f"{str(path)!r} is not valid JSON ({err}); write the folder again with hfx.save") from err
    if not isinstance(data, dict):
        raise HfxError(f"{str(path)!r} holds {type(data).__name__}, not a JSON object; write the folder again")
    own = {f.name for f in dataclasses.fields(cls)}
    nested = isinstance(data.get("config"), dict) and "config" not in own  # {"config": fields, **extra}
    raw, rest = (data["config"], {k: v for k, v in data.items() if k != "config"}) if nested else (data, {})
    raw = {(renamed or {}).get(k, k): v for k, v in raw.items()}
    return cls(**{k: v for k, v in raw.items() if k in own}), rest
