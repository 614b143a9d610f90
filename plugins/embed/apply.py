"""``hfx.apply(model, "embed", ...)`` and ``hfx.embed(model_or_name, ...)``: wrap a transformer as an embedder.

``pooling="auto"``, ``normalize=None`` and ``max_length=0`` follow the model folder: a
sentence-transformers folder (such as ``minilm``) gives its own pooling, Normalize module and
``max_seq_length``, so ``hfx.embed("minilm")`` returns what ``SentenceTransformer(folder)`` returns.
Without such a folder: mean pooling for encoders, last-token pooling for decoders, no normalisation,
the tokenizer's limit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from hfx.errors import HfxError
from hfx.models.loading import model_family
from hfx_plugins.embed.config import EmbedConfig
from hfx_plugins.embed.embedder import Embedder
from hfx_plugins.embed.stformat import read_settings

__all__ = ["apply", "embed", "model_folder"]


def model_folder(model: nn.Module) -> Path | None:
    """The local folder ``model`` was loaded from (``config._name_or_path``), if it still exists."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = getattr(getattr(inner, "config", None), "_name_or_path", "") or ""
    return Path(name) if name and Path(name).is_dir() else None


def _tokenizer_from(folder: Path | None) -> Any:
    if folder is None or not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None and tok.eos_token is not None:  # decoders: pad with EOS for training batches
        tok.pad_token = tok.eos_token
    return tok


def apply(model: nn.Module, cfg: EmbedConfig) -> Embedder:
    """Wrap ``model`` in an :class:`Embedder` with the pooling, normalisation and length of ``cfg``.

    The returned embedder holds ``model`` itself (``embedder.model``), not a copy: training one trains the other.

    Raises:
        HfxError: ``model`` is already an embedder, or not a transformers model (no ``config``).
    """
    if isinstance(model, Embedder):
        raise HfxError("the model is already an embedder; apply embed to the transformers model inside (embedder.model)")
    if getattr(model, "config", None) is None:
        raise HfxError(f"embed needs a transformers model, got {type(model).__name__}")
    folder = model_folder(model)
    settings = read_settings(folder) if folder is not None else {}
    family = model_family(model.config)
    pooling = cfg.pooling
    if pooling == "auto":
        pooling = settings.get("pooling") or ("lasttoken" if family == "decoder" else "mean")
    normalize = cfg.normalize if cfg.normalize is not None else bool(settings.get("normalize", False))
    max_length = cfg.max_length or int(settings.get("max_length", 0))
    return Embedder(model, _tokenizer_from(folder), pooling, normalize, max_length)


def embed(
    model_or_name: str | os.PathLike[str] | nn.Module,
    pooling: str = "auto",
    normalize: bool | None = None,
    *,
    tokenizer: Any = None,
    max_length: int = 0,
    device: str | None = None,
) -> Embedder:
    """Return an :class:`Embedder` for a model name (offline name, folder, Hub id) or a transformers model.

    ``embedder.encode(texts, batch_size=32)`` gives a float32 array (N, H); ``hfx.save(embedder, path)``
    writes a sentence-transformers folder. See the module docstring for the defaults.

    Raises:
        HfxError: an embedder or another kind of object, an unknown pooling mode or a negative ``max_length``,
            or a model name that cannot be loaded.
    """
    from hfx import api, registry
    from hfx.models.loading import load_model

    cfg = registry.get("embed").make_config(pooling=pooling, normalize=normalize, max_length=max_length)
    if isinstance(model_or_name, Embedder):
        raise HfxError("already an embedder; call hfx.embed on a model name or a transformers model")
    if isinstance(model_or_name, (str, os.PathLike)):
        model, loaded_tok = load_model(str(model_or_name), "base")
        tokenizer = tokenizer if tokenizer is not None else loaded_tok
    elif isinstance(model_or_name, nn.Module):
        model = model_or_name
    else:
        raise HfxError(
            f"hfx.embed takes a model name, a folder or a transformers model, not a {type(model_or_name).__name__}"
        )
    embedder = api.apply(model, "embed", cfg=cfg)
    if tokenizer is not None:
        embedder.tokenizer = tokenizer
    if device is not None:
        embedder.to(device)
    return embedder.eval()
