"""Every option of a sentence-transformers folder is honoured (vectors equal SentenceTransformer(folder)'s,
sentence-transformers 6.2 being the independent source) or refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hfx
from hfx.errors import HfxError
from hfx.testing import save_tiny_model

TEXTS = ["the cat sat on the mat", "a", "dogs bark at night and the cat runs away from the loud dogs"]


def _st_folder(tmp: Path, family: str, mode: str | list[str], normalize: bool = False, dense: bool = False,
               max_seq_length: int | None = None, include_prompt: bool = True, chat: bool = False) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    base = save_tiny_model(tmp / "base", family, "base")
    if not chat:  # without a chat template sentence-transformers 6.2 tokenizes the plain text, as hfx does
        cfg = json.loads((base / "tokenizer_config.json").read_text())
        cfg.pop("chat_template", None)
        (base / "tokenizer_config.json").write_text(json.dumps(cfg))
        (base / "chat_template.jinja").unlink(missing_ok=True)
    word = Transformer(str(base), max_seq_length=max_seq_length)
    dim = word.get_embedding_dimension()
    modules = [word, Pooling(dim, pooling_mode=mode, include_prompt=include_prompt)]
    if dense:
        modules.append(Dense(dim, 8))
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(tmp / "st"))
    return tmp / "st"


def _both(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    return hfx.embed(folder).encode(TEXTS), want


@pytest.mark.parametrize(("family", "mode", "normalize"), [
    ("bert", "mean", True), ("bert", "cls", False), ("bert", "max", False),
    ("llama", "lasttoken", True), ("llama", "weightedmean", False),
])
def test_pooling_and_normalize_equal_sentence_transformers(tmp_path: Path, family: str, mode: str, normalize: bool) -> None:
    got, want = _both(_st_folder(tmp_path, family, mode, normalize))
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_max_seq_length_and_include_prompt(tmp_path: Path) -> None:
    folder = _st_folder(tmp_path, "bert", "mean", max_seq_length=5, include_prompt=False)
    with pytest.warns(UserWarning, match="truncated"):
        got = hfx.embed(folder).encode(TEXTS)
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_do_lower_case_with_an_uncased_tokenizer_is_honoured(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = _st_folder(tmp_path, "bert", "mean")
    _edit(folder / "sentence_bert_config.json", do_lower_case=True)  # the tiny BERT tokenizer lowercases already
    upper = [t.upper() for t in TEXTS]
    want = SentenceTransformer(str(folder), device="cpu").encode(upper, convert_to_numpy=True)
    np.testing.assert_allclose(hfx.embed(folder).encode(upper), want, atol=2e-5)


def _edit(file: Path, **changes: object) -> None:
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


@pytest.mark.parametrize(("what", "pattern"), [
    ("dense", "modules hfx does not implement .Dense"),
    ("two modes", r"pooling \['cls', 'mean'\] is not supported"),
    ("lower", "do_lower_case=True is not reproduced"),
    ("prompt", "default_prompt_name='query' makes sentence-transformers prepend"),
    ("chat", "modality_config has 'message'.*chat template"),
])
def test_options_hfx_does_not_reproduce_are_refused_by_name(tmp_path: Path, what: str, pattern: str) -> None:
    folder = _st_folder(tmp_path, "llama" if what == "chat" else "bert", ["cls", "mean"] if what == "two modes" else "mean",
                        dense=what == "dense", chat=what == "chat")
    if what == "lower":  # a case-sensitive tokenizer (no Lowercase normalizer), where do_lower_case matters
        _edit(folder / "sentence_bert_config.json", do_lower_case=True)
        _edit(folder / "tokenizer.json", normalizer=None)
    if what == "prompt":
        _edit(folder / "config_sentence_transformers.json", prompts={"query": "query: "}, default_prompt_name="query")
    with pytest.raises(HfxError, match=pattern):
        hfx.embed(folder)


def test_nan_embedding_names_the_input_row() -> None:
    import torch

    from hfx.testing import tiny_model

    model, tok = tiny_model("bert", "base", seed=0)
    embedder = hfx.embed(model, tokenizer=tok)
    ids = [set(tok(t)["input_ids"]) for t in TEXTS]
    bad = min(ids[2] - ids[0] - ids[1])  # a token only the third text has
    with torch.no_grad():
        model.get_input_embeddings().weight[bad] = float("nan")  # only texts with this token break
    with pytest.raises(HfxError, match=r"embeddings \(3, 32\) has .* first bad row 2 of 3 .*'dogs bark"):
        embedder.encode(TEXTS)
