"""Tests for hfx.data: loading (files, folders, bundled), column mapping, errors, pydoc text, collators."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hfx.data import (
    BUNDLED,
    IGNORE_INDEX,
    DataConfig,
    bundled_path,
    collator_for_task,
    load_data,
    loading,
    pydoc_paragraphs,
    pydoc_sentences,
    pydoc_texts,
    pydoc_token_windows,
    stdlib_docstring_sentences,
    tokenize_for_task,
)
from hfx.errors import HfxError

ROWS = [{"sentence": f"example number {i}", "sentiment": i % 2, "answer": f"a{i}"} for i in range(10)]
WORDS = "the a movie was good bad example number one two three four five six seven eight nine".split()


def tiny_tokenizer(pad: bool = True, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in code: ids 0-4 are special, then one id per word of WORDS and digits."""
    specials = ["[PAD]", "[UNK]", "[MASK]", "[EOS]", "[BOS]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS + [str(i) for i in range(10)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        mask_token="[MASK]",
        eos_token="[EOS]",
        pad_token="[PAD]" if pad else None,
        padding_side=padding_side,
    )
    return tok


def write_source(kind: str, tmp_path: Path) -> Path:
    """Write ROWS in format ``kind``; return the path to pass as data.path."""
    df = pd.DataFrame(ROWS)
    if kind == "jsonl":
        (path := tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "json-array":
        (path := tmp_path / "d.json").write_text(json.dumps(ROWS))
    elif kind == "csv":
        df.to_csv(path := tmp_path / "d.csv", index=False)
    elif kind == "parquet":
        df.to_parquet(path := tmp_path / "d.parquet", index=False)
    elif kind == "save_to_disk":
        datasets.Dataset.from_list(ROWS).save_to_disk(str(path := tmp_path / "saved"))
    elif kind == "save_to_disk-dict":
        ds = datasets.Dataset.from_list(ROWS)
        datasets.DatasetDict({"train": ds.select(range(8)), "test": ds.select(range(8, 10))}).save_to_disk(
            str(path := tmp_path / "saved_dict")
        )
    else:  # folder of files named by split
        (path := tmp_path / "folder").mkdir()
        (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:8]))
        df.iloc[8:].to_csv(path / "test.csv", index=False)
    return path


@pytest.mark.parametrize(
    "kind", ["jsonl", "json-array", "csv", "parquet", "save_to_disk", "save_to_disk-dict", "folder"]
)
def test_load_each_source_type_with_column_mapping(kind: str, tmp_path: Path) -> None:
    cfg = DataConfig(
        path=str(write_source(kind, tmp_path)),
        text_column="sentence",
        label_column="sentiment",
        target_column="answer",
    )
    dd = load_data(cfg, seed=0, required=["sentence", "sentiment"])
    assert set(dd) == {"train", "eval"}
    # Sources with a test split use it (8 + 2); single sources hold out eval_fraction = 0.2 of 10.
    assert (len(dd["train"]), len(dd["eval"])) == (8, 2)
    assert dd["train"].column_names == ["text", "label", "target"]
    assert sorted(list(dd["train"]["text"]) + list(dd["eval"]["text"])) == sorted(r["sentence"] for r in ROWS)
    row = dd["eval"][0]
    assert row["label"] == int(row["text"].split()[-1]) % 2 and row["target"] == "a" + row["text"].split()[-1]
    assert not list(tmp_path.rglob("cache-*.arrow"))  # nothing written next to the user's data


def test_seeded_split_is_deterministic_and_limits_apply(tmp_path: Path) -> None:
    cfg = DataConfig(path=str(write_source("jsonl", tmp_path)), text_column="sentence", eval_fraction=0.3)
    a, b = load_data(cfg, seed=1), load_data(cfg, seed=1)
    assert list(a["eval"]["text"]) == list(b["eval"]["text"]) and len(a["eval"]) == 3
    assert list(load_data(cfg, seed=2)["eval"]["text"]) != list(a["eval"]["text"])
    cfg.max_train_samples, cfg.max_eval_samples = 4, 1
    c = load_data(cfg, seed=1)
    assert (len(c["train"]), len(c["eval"])) == (4, 1) and list(c["train"]["text"]) == list(
        a["train"]["text"]
    )[:4]


def test_text_pair_and_string_labels(tmp_path: Path) -> None:
    rows = [{"q": f"q{i}", "p": f"p{i}", "y": ["no", "yes"][i % 2], "text": "other"} for i in range(6)]
    (path := tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dd = load_data(DataConfig(path=str(path), text_column="q", text_pair_column="p", label_column="y"))
    # The configured text column wins over an unrelated column already named "text".
    assert sorted(dd["train"].column_names) == ["label", "text", "text_pair"]
    assert dd["train"].features["label"].names == ["no", "yes"]  # string labels encoded, sorted
    row = dd["train"][0]
    assert row["text_pair"] == "p" + row["text"][1:] and row["label"] == int(row["text"][1:]) % 2


def test_missing_column_says_what_to_set(tmp_path: Path) -> None:
    path = write_source("jsonl", tmp_path)
    cfg = DataConfig(path=str(path), text_column="sentence", label_column="sentimnet")
    with pytest.raises(HfxError) as err:
        load_data(cfg, required=[cfg.text_column, cfg.label_column])
    msg = str(err.value)
    assert "data column 'sentimnet' not found in" in msg and str(path) in msg
    assert "available columns: sentence, sentiment, answer" in msg
    assert "(did you mean 'sentiment'?)" in msg and "set data.label_column=" in msg
    assert "\n" not in msg


def test_missing_path_unknown_extension_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(HfxError, match=r"data path '.*nope.jsonl' does not exist.*bundled data set: .*pydoc.*sentiment"):
        load_data(DataConfig(path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(HfxError, match=r"did you mean 'sentiment'"):
        load_data(DataConfig(path="sentimnt"))
    (bad := tmp_path / "d.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(HfxError, match=r"unknown file type '.pkl'"):
        load_data(DataConfig(path=str(bad)))
    with pytest.raises(HfxError, match=r"split 'training' not found.*did you mean 'train'"):
        load_data(DataConfig(path="sentiment", train_split="training"))


def test_bundled_sentiment() -> None:
    dd = load_data(DataConfig(path="sentiment", target_column="label_text"), required=["text", "label"])
    train, test = dd["train"], dd["eval"]
    assert (len(train), len(test)) == (1200, 300)
    assert (sum(train["label"]), sum(test["label"])) == (600, 150)  # balanced
    assert not set(train["word"]) & set(test["word"])  # split by word
    assert train.features["label"].names == ["negative", "positive"]
    row = train[0]
    assert row["word"] in row["text"] and row["target"] == ["negative", "positive"][row["label"]]
    assert (row["rating"] > 0) == (row["label"] == 1)
    assert bundled_path("sentiment", "test") == Path(loading.__file__).parent / "bundled/sentiment/test.jsonl"
    with pytest.raises(HfxError, match="built at run time"):
        bundled_path("pydoc")


def test_bundled_pydoc_and_sentences() -> None:
    dd = load_data(DataConfig(path="pydoc"))
    assert dd["train"].column_names == ["text"] and len(dd["train"]) > 500 and len(dd["eval"]) > 20
    n_eval_topics = round(0.1 * len(pydoc_texts()))
    assert list(dd["eval"]["text"]) == [c for topic in pydoc_paragraphs()[-n_eval_topics:] for c in topic]
    lengths = [len(t) for t in dd["train"]["text"]]
    assert sorted(lengths)[len(lengths) // 2] in range(200, 601)  # median chunk within the target range
    sentences = pydoc_sentences()
    assert len(sentences) > 1000 and all(40 <= len(s) <= 300 for s in sentences)
    # First topic by key is "assert"; its first prose sentence (Python reference manual).
    assert (
        sentences[0]
        == "Assert statements are a convenient way to insert debugging assertions into a program:"
    )


def test_stdlib_docstring_sentences_are_prose_from_the_standard_library() -> None:
    every = stdlib_docstring_sentences()
    assert len(every) > 5000 and len(set(every)) == len(every)  # about 12,000 distinct on CPython 3.11
    assert all(40 <= len(s) <= 300 and s[0].isupper() and ">>>" not in s for s in every)
    # heapq's module docstring (CPython source): a sentence that any 3.x standard library carries.
    assert "The interesting property of a heap is that a[0] is always its smallest element." in every
    some = stdlib_docstring_sentences(50)
    assert some == every[:50] and some == stdlib_docstring_sentences(50)  # a fixed shuffle: deterministic
    assert stdlib_docstring_sentences(50, seed=1) != some


def test_pydoc_token_windows_are_the_first_tokens() -> None:
    tok = tiny_tokenizer()
    windows = pydoc_token_windows(tok, window=64, n_windows=3)
    assert windows.shape == (3, 64) and windows.dtype == torch.long
    full = tok("\n\n".join(pydoc_texts()), add_special_tokens=False, verbose=False)["input_ids"]
    assert windows.flatten().tolist() == full[: 3 * 64]
    with pytest.raises(HfxError, match="fewer windows"):
        pydoc_token_windows(tok, window=10**6, n_windows=2)


def rows_for(task: str, texts: list[str]) -> datasets.Dataset:
    data = {
        "text": texts,
        "label": [1, 0, 1][: len(texts)],
        "target": ["one", "two three", "four"][: len(texts)],
    }
    return datasets.Dataset.from_dict(data)


def test_sequence_classification_pads_to_longest() -> None:
    tok = tiny_tokenizer()
    ds = tokenize_for_task(
        rows_for("c", ["good movie", "the movie was bad"]), tok, "sequence-classification", 16
    )
    batch = collator_for_task(tok, "sequence-classification")([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 4)  # (B, T): longest example, not max_length
    assert batch["input_ids"][0, 2:].tolist() == [0, 0] and batch["attention_mask"][0].tolist() == [
        1,
        1,
        0,
        0,
    ]
    assert batch["labels"].tolist() == [1, 0]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_causal_lm_appends_eos_and_masks_padding(padding_side: str) -> None:
    tok = tiny_tokenizer(pad=False, padding_side=padding_side)  # no pad token: eos (id 3) pads
    ds = tokenize_for_task(rows_for("lm", ["good movie", "the movie was bad"]), tok, "causal-lm", 16)
    assert ds[0]["input_ids"][-1] == tok.eos_token_id
    batch = collator_for_task(tok, "causal-lm")([ds[0], ds[1]])
    assert tok.pad_token_id == tok.eos_token_id == 3
    short_ids, short_labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    real = [WORDS.index("good") + 5, WORDS.index("movie") + 5, 3]
    pad = [3, 3]
    assert short_ids == (real + pad if padding_side == "right" else pad + real)
    # The real eos keeps its label; only the padding is IGNORE_INDEX.
    assert short_labels == (real + [IGNORE_INDEX] * 2 if padding_side == "right" else [IGNORE_INDEX] * 2 + real)
    truncated = tokenize_for_task(rows_for("lm", ["the movie was bad"]), tok, "causal-lm", 3)
    assert truncated[0]["input_ids"][-1] == 3 and len(truncated[0]["input_ids"]) == 3


def test_seq2seq_labels_padded_with_ignore_index() -> None:
    tok = tiny_tokenizer()
    ds = tokenize_for_task(rows_for("s2s", ["good movie", "bad"]), tok, "seq2seq-lm", 16)
    batch = collator_for_task(tok, "seq2seq-lm")([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 2) and batch["labels"].shape == (2, 2)
    assert batch["labels"][0].tolist() == [WORDS.index("one") + 5, IGNORE_INDEX]


def test_masked_lm_masking_is_seeded() -> None:
    tok = tiny_tokenizer()
    texts = [" ".join(WORDS * 4), "good movie"]
    ds = tokenize_for_task(rows_for("mlm", texts), tok, "masked-lm", 128)
    batches = [collator_for_task(tok, "masked-lm", seed=s)([ds[0], ds[1]]) for s in (0, 0, 1)]
    assert torch.equal(batches[0]["labels"], batches[1]["labels"])
    assert not torch.equal(batches[0]["labels"], batches[2]["labels"])
    chosen = batches[0]["labels"] != IGNORE_INDEX  # (B, T)
    assert not chosen[batches[0]["attention_mask"] == 0].any()  # padding is never chosen
    assert 0.05 < chosen[0].float().mean().item() < 0.3  # about 15% of 72 tokens


def test_task_errors() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(HfxError, match="did you mean 'causal-lm'"):
        collator_for_task(tok, "causal_lm")
    with pytest.raises(HfxError, match=r"needs a 'target' column.*set data.target_column="):
        tokenize_for_task(datasets.Dataset.from_dict({"text": ["a"]}), tok, "seq2seq-lm", 8)


def test_every_config_field_is_documented() -> None:
    """The CLI help comes from the string literal under each field (litgpt style)."""
    body = ast.parse(inspect.getsource(DataConfig)).body[0].body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            doc = body[i + 1]
            assert isinstance(doc, ast.Expr) and isinstance(doc.value.value, str), node.target.id
    assert set(BUNDLED) == {"sentiment", "pydoc", "instructions", "pydoc_pairs", "sentiment_foobar", "arithmetic_cot", "rankings"}
