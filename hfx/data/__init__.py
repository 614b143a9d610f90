"""hfx.data: data sets for recipes (bundled, local files, folders), tokenization and batch collation.

from hfx.data import DataConfig, load_data, tokenize_for_task, collator_for_task
splits = load_data(DataConfig(path="sentiment"), required=["text", "label"])  # "train", "eval"
train = tokenize_for_task(splits["train"], tokenizer, "sequence-classification", max_length=128)
collate = collator_for_task(tokenizer, "sequence-classification")
"""

from hfx.data.bundled import BUNDLED, BundledDataset, bundled_path, load_bundled
from hfx.data.collate import IGNORE_INDEX, TASKS, collator_for_task, tokenize_for_task
from hfx.data.docstrings import stdlib_docstring_sentences
from hfx.data.loading import EXTENSIONS, DataConfig, load_data, read_source
from hfx.data.text import pydoc_paragraphs, pydoc_sentences, pydoc_texts, pydoc_token_windows

__all__ = [
    "BUNDLED",
    "EXTENSIONS",
    "IGNORE_INDEX",
    "TASKS",
    "BundledDataset",
    "DataConfig",
    "bundled_path",
    "collator_for_task",
    "load_bundled",
    "load_data",
    "pydoc_paragraphs",
    "pydoc_sentences",
    "pydoc_texts",
    "pydoc_token_windows",
    "read_source",
    "stdlib_docstring_sentences",
    "tokenize_for_task",
]
