"""hfx.data: data sets for recipes (bundled, local files, folders), tokenization and batch collation.

from hfx.data import DataConfig, load_data, tokenize_for_task, collator_for_task
splits = load_data(DataConfig(path="sentiment"), required=["text", "label"])  # "train", "eval"
train = tokenize_for_task(splits["train"], tokenizer, "sequence-classification", max_length=128)
collate = collator_for_task(tokenizer, "sequence-classification")
"""

from hfx.registry import lazy_exports

# Loaded on first use: the loaders pull in datasets, torch and transformers, and `hfx config` (which reads
# DataConfig) must not.
_EXPORTS = {
    "BUNDLED": "hfx.data.bundled",
    "BundledDataset": "hfx.data.bundled",
    "bundled_path": "hfx.data.bundled",
    "load_bundled": "hfx.data.bundled",
    "IGNORE_INDEX": "hfx.data.collate",
    "TASKS": "hfx.data.collate",
    "collator_for_task": "hfx.data.collate",
    "tokenize_for_task": "hfx.data.collate",
    "stdlib_docstring_sentences": "hfx.data.docstrings",
    "DataConfig": "hfx.data.config",
    "EXTENSIONS": "hfx.data.loading",
    "load_data": "hfx.data.loading",
    "read_source": "hfx.data.loading",
    "pydoc_paragraphs": "hfx.data.text",
    "pydoc_sentences": "hfx.data.text",
    "pydoc_texts": "hfx.data.text",
    "pydoc_token_windows": "hfx.data.text",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

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
