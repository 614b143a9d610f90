"""The sentence-transformers folder format: read a folder's pooling settings, write the module files.

A sentence-transformers model folder is a transformers folder (``config.json``, ``model.safetensors``,
tokenizer files) plus:

- ``modules.json``: the module pipeline, here Transformer -> Pooling [-> Normalize];
- ``sentence_bert_config.json``: ``max_seq_length`` of the Transformer module;
- ``1_Pooling/config.json``: the pooling mode;
- ``config_sentence_transformers.json``: versions and the similarity function.

hfx writes the module types and pooling keys of the classic layout (``sentence_transformers.models.*``,
``pooling_mode_*_tokens`` booleans), the one all-MiniLM-L6-v2 ships with: sentence-transformers v2 to v5
read it, and v6 converts it on load (``Pooling.load_config``), whereas v6's own layout
(``sentence_transformers.base.modules...``, ``pooling_mode: "mean"``) does not import in v5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hfx.errors import HfxError
from hfx.io import atomic_write_json
from hfx.validate import installed_version

__all__ = ["read_settings", "write_modules"]

# hfx pooling mode <-> the classic 1_Pooling/config.json key (v6's "pooling_mode" names equal hfx's)
_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
_KNOWN = ("Transformer", "Pooling", "Normalize")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise HfxError(f"cannot read {path}: {err}; is this a complete sentence-transformers folder?") from None


def read_settings(folder: str | Path) -> dict[str, Any]:
    """Pooling mode, normalisation and max length of a sentence-transformers folder ({} for a plain model folder).

    Raises:
        HfxError: a module hfx does not implement (Dense, LayerNorm, ...) or a pooling mode it does not
            support: its embeddings would silently differ from sentence-transformers'.
    """
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return {}
    modules = _read_json(folder / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    unknown = [k for k in kinds if k not in _KNOWN]
    if unknown:
        raise HfxError(
            f"{folder} has sentence-transformers modules hfx does not implement ({', '.join(unknown)}); "
            "load it with SentenceTransformer, or export a Transformer + Pooling [+ Normalize] model"
        )
    inner = [m.get("path", "") for m, k in zip(modules, kinds, strict=True) if k == "Transformer"]
    if inner != [""] and inner != ["."]:
        raise HfxError(f"{folder}: the Transformer module is in {inner!r}, not at the folder's root; "
                       "give hfx.embed that sub-folder (a transformers folder) and choose pooling=...")
    _refuse_options(folder)
    out: dict[str, Any] = {"normalize": "Normalize" in kinds}
    pooling = next((m for m, k in zip(modules, kinds, strict=True) if k == "Pooling"), None)
    if pooling is not None:
        cfg = _read_json(folder / pooling["path"] / "config.json")
        modes = cfg.get("pooling_mode") or [m for m, key in _POOLING_KEYS.items() if cfg.get(key)]
        if cfg.get("pooling_mode_mean_sqrt_len_tokens"):
            modes = [*modes, "mean_sqrt_len_tokens"]
        modes = [modes] if isinstance(modes, str) else list(modes)
        if len(modes) != 1 or modes[0] not in _POOLING_KEYS:
            raise HfxError(
                f"{folder}: pooling {modes} is not supported by hfx (one of {', '.join(_POOLING_KEYS)}); "
                "pass pooling=... to choose one"
            )
        out["pooling"] = modes[0]
    if (folder / "sentence_bert_config.json").is_file():
        max_len = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
        if max_len:
            out["max_length"] = int(max_len)
    return out


# Settings that change the vectors and that hfx does not reproduce, with the value that leaves them inert.
_TRANSFORMER_INERT: dict[str, Any] = {
    "do_lower_case": False, "model_args": {}, "tokenizer_args": {}, "config_args": {}, "processing_kwargs": {},
    "unpad_inputs": None, "query_length": None, "document_length": None, "query_expansion": None,
}


def _tokenizer_lowercases(folder: Path) -> bool:
    """Whether the folder's tokenizer gives the same ids to a text and its lowercase form (uncased BERT)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        return False
    # Lowercase words of its own vocabulary, capitalised: a case-sensitive tokenizer splits or drops them.
    words = [w for w in tok.get_vocab() if w.isalpha() and w.islower() and len(w) > 1][:50]
    probe = " ".join(w.capitalize() for w in words) or "Hello World"
    return tok(probe)["input_ids"] == tok(probe.lower())["input_ids"]


def _refuse_options(folder: Path) -> None:
    """Refuse, by name, a folder option that would make hfx's vectors differ from ``SentenceTransformer(folder)``.

    Honoured elsewhere: the pooling mode, ``Normalize``, ``max_seq_length``. Inert here: ``include_prompt`` and
    ``prompts`` without a ``default_prompt_name`` (sentence-transformers adds a prompt only when asked;
    ``hfx.embed`` never does), ``similarity_fn_name`` (scores, not vectors).

    Raises:
        HfxError: naming the file and the option (``do_lower_case``, tokenizer/model arguments, chat-template
            rendering of texts, a default prompt).
    """
    bert_cfg = folder / "sentence_bert_config.json"
    if bert_cfg.is_file():
        for key, value in _read_json(bert_cfg).items():
            if key == "do_lower_case" and value is True and _tokenizer_lowercases(folder):
                continue  # the tokenizer's own normalizer lowercases already: the same ids either way
            if key in _TRANSFORMER_INERT and value not in (_TRANSFORMER_INERT[key], None):
                raise HfxError(f"{bert_cfg}: {key}={value!r} is not reproduced by hfx.embed (its vectors would differ "
                               "from SentenceTransformer's); load the folder with SentenceTransformer, or remove the option")
        modalities = _read_json(bert_cfg).get("modality_config") or {}
        if "message" in modalities:
            raise HfxError(f"{bert_cfg}: modality_config has 'message', so sentence-transformers renders every text "
                           "through the tokenizer's chat template, which hfx.embed does not; load the folder with "
                           "SentenceTransformer, or save it from a tokenizer without a chat template")
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.is_file():
        cfg = _read_json(st_cfg)
        if cfg.get("default_prompt_name"):
            raise HfxError(f"{st_cfg}: default_prompt_name={cfg['default_prompt_name']!r} makes sentence-transformers "
                           "prepend a prompt to every text, which hfx.embed does not; prepend it yourself and set "
                           "default_prompt_name to null")


def write_modules(folder: Path, *, dim: int, pooling: str, normalize: bool, max_length: int) -> None:
    """Write the sentence-transformers module files into ``folder`` (the transformers files go beside them)."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(parents=True, exist_ok=True)  # Normalize has no settings
    atomic_write_json(folder / "modules.json", modules)
    atomic_write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    pooling_cfg: dict[str, Any] = {"word_embedding_dimension": dim, "pooling_mode_mean_sqrt_len_tokens": False}
    pooling_cfg.update({key: mode == pooling for mode, key in _POOLING_KEYS.items()})
    atomic_write_json(folder / "1_Pooling" / "config.json", pooling_cfg)
    versions = {"sentence_transformers": installed_version("sentence-transformers"),
                "transformers": installed_version("transformers"), "pytorch": installed_version("torch")}
    atomic_write_json(folder / "config_sentence_transformers.json",
                      {"__version__": versions, "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
