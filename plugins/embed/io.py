"""Save an embedder as a sentence-transformers folder; load it back onto a base model.

``hfx.save(embedder, path)`` writes the transformer with ``save_pretrained`` (safetensors), its tokenizer,
and the sentence-transformers module files (:mod:`.stformat`), so ``SentenceTransformer(path)`` loads it
and returns the same embeddings; ``hfx.embed(path)`` loads it too. ``hfx_embed.json`` beside them
records the embed config, so ``hfx.load(base_model, path)`` can rebuild the embedder on a base model.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hfx.errors import HfxError
from hfx.io import (
    config_marker,
    has_config_marker,
    load_weights_strict,
    read_config_marker,
    write_config_marker,
)
from hfx_plugins.embed.config import EmbedConfig
from hfx_plugins.embed.embedder import Embedder
from hfx_plugins.embed.stformat import write_modules
from hfx_plugins.prompt_learning import prompt_plugins

__all__ = ["MARKER", "can_load", "load", "save"]

MARKER = config_marker("embed")


def _saved_module(embedder: Embedder) -> nn.Module:
    """What goes into the folder: the bare transformer (BertModel, LlamaModel), or a whole T5 for its encoder."""
    config = embedder.backbone.config
    module = embedder.model if getattr(config, "is_encoder_decoder", False) else embedder.backbone
    if hasattr(embedder.model, "get_base_model"):
        raise HfxError("the embedder's model is wrapped by peft; merge the adapter first (merge_and_unload) and embed that")
    for name in prompt_plugins(embedder.model):  # a sentence-transformers folder has no place for the prompt
        raise HfxError(f"embed cannot save a {name} model as a sentence-transformers folder: the folder holds the "
                       f"transformer only, and the {name} prompt would be dropped; save the model with "
                       "hfx.save(embedder.model, path) and embed it again after hfx.load")
    if not hasattr(module, "save_pretrained"):
        raise HfxError(f"{type(module).__name__} has no save_pretrained; only transformers models can be saved")
    return module


def save(model: nn.Module, path: Path) -> None:
    """Write ``model`` (an :class:`Embedder`) into ``path`` as a sentence-transformers folder.

    Raises:
        HfxError: ``model`` is not an embedder, has no tokenizer, or wraps a peft model or a non-transformers one.
    """
    if not isinstance(model, Embedder):
        raise HfxError(f"embed's save needs an embedder (from hfx.embed), got {type(model).__name__}")
    if model.tokenizer is None:
        raise HfxError("the embedder has no tokenizer and sentence-transformers needs one; set embedder.tokenizer first")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _saved_module(model).save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    p = model.pooling
    write_modules(path, dim=model.dim, pooling=p.mode, normalize=p.normalize, max_length=model.limit())
    write_config_marker(path, "embed", EmbedConfig(pooling=p.mode, normalize=p.normalize, max_length=model.limit()))


def can_load(path: Path) -> bool:
    """Whether ``path`` holds an embedder this plugin saved (its ``hfx.io`` config marker)."""
    return has_config_marker(path, "embed")


def load(model: nn.Module, path: Path) -> tuple[Embedder, EmbedConfig]:
    """Rebuild the embedder on ``model`` and load the saved transformer weights into it strictly.

    Raises:
        HfxError: a missing, truncated or corrupted weights file, a saved weight of another shape, or weights
            missing from / unknown to ``model`` (not the base the embedder was trained from).
    """
    from hfx_plugins.embed.apply import _tokenizer_from, apply

    path = Path(path)
    cfg, _ = read_config_marker(path, "embed", EmbedConfig)
    embedder = apply(model, cfg)
    embedder.tokenizer = _tokenizer_from(path) or embedder.tokenizer
    target = _saved_module(embedder)
    load_weights_strict(target, path, "load onto the base model the embedder was trained from",
                        "load them onto the model they were trained from")
    return embedder, cfg
