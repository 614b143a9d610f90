"""Small data sets that ship with hfx (or are built from the Python install), so every recipe runs offline.

``sentiment`` lives as JSONL files under ``hfx/data/bundled/`` (written by
``scripts/make_bundled_data.py`` from the VADER lexicon); ``pydoc`` is built at run time from
``pydoc_data.topics``. ``hfx/data/bundled/README.md`` says where each one came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow.json as pa_json

from hfx.data.text import pydoc_paragraphs
from hfx.errors import HfxError, did_you_mean

__all__ = ["BUNDLED", "BUNDLED_DIR", "BundledDataset", "bundled_path", "load_bundled"]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
"""Folder holding the bundled data files (``<name>/<split>.jsonl``)."""


@dataclass(frozen=True)
class BundledDataset:
    """One bundled data set: where it came from, its columns, and its files (or the function building it)."""

    name: str
    """Name used as ``data.path``."""
    description: str
    """What the data set is, in one line."""
    source: str
    """Where the data came from, and its licence."""
    columns: tuple[str, ...]
    """Columns of every split."""
    files: dict[str, str] = field(default_factory=dict)
    """Split name -> file path relative to ``BUNDLED_DIR``; empty when built at run time."""
    build: Callable[[], datasets.DatasetDict] | None = None
    """Builds the splits at run time when there are no files."""
    label_names: tuple[str, ...] = ()
    """Names of the integer labels (label 0 first), for a ClassLabel ``label`` column; empty if none."""


def _build_pydoc(eval_share: float = 0.1) -> datasets.DatasetDict:
    """Paragraph chunks (about 200-600 characters) of ``pydoc_data.topics``; last 10% of topics -> "test"."""
    per_topic = pydoc_paragraphs()  # one list of chunks per topic, topics sorted by key
    n_eval = max(1, round(eval_share * len(per_topic)))
    train = [chunk for topic in per_topic[:-n_eval] for chunk in topic]
    test = [chunk for topic in per_topic[-n_eval:] for chunk in topic]
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": train}),
            "test": datasets.Dataset.from_dict({"text": test}),
        }
    )


BUNDLED: dict[str, BundledDataset] = {
    "sentiment": BundledDataset(
        name="sentiment",
        description="binary sentiment of one-word reviews in neutral sentences; 1200 train / 300 test, "
        "balanced, test words (and their word families) never seen in train",
        source="VADER sentiment lexicon (Hutto & Gilbert 2014, MIT licence; PyPI vaderSentiment 3.3.2): "
        "words rated |mean| >= 1.5 with std <= 1.0 by ten people, put into sentence templates "
        "by scripts/make_bundled_data.py",
        columns=("text", "label", "label_text", "word", "rating"),
        files={"train": "sentiment/train.jsonl", "test": "sentiment/test.jsonl"},
        label_names=("negative", "positive"),
    ),
    "instructions": BundledDataset(
        name="instructions",
        description="short instructions with one checkable answer each (arithmetic, strings, lists, Python "
        "expressions, capitals, antonyms, plurals); 1001 train / 152 test, test items held out",
        source="written for hfx by scripts/make_instruction_data.py: answers computed, or from small hand-written "
        "tables of well-known facts; words from pydoc_data.topics (PSF licence)",
        columns=("instruction", "response", "task"),
        files={"train": "instructions/train.jsonl", "test": "instructions/test.jsonl"},
    ),
    "sentiment_foobar": BundledDataset(
        name="sentiment_foobar",
        description="the sentiment set with label words a model has no prior for (negative -> foo, positive -> "
        "bar), for in-context learning; 1200 train / 100 test (50 per class)",
        source="derived from the bundled sentiment set (VADER lexicon, MIT licence) by scripts/make_icl_data.py",
        columns=("text", "label", "label_text", "word"),
        files={"train": "sentiment_foobar/train.jsonl", "test": "sentiment_foobar/test.jsonl"},
        label_names=("foo", "bar"),
    ),
    "arithmetic_cot": BundledDataset(
        name="arithmetic_cot",
        description="multi-step arithmetic word problems with whole-number answers for chain of thought; "
        "8 worked exemplars (train, 'The answer is N.') / 64 test problems",
        source="written for hfx by scripts/make_icl_data.py: 40 from 8 templates (numbers from random.Random(1234)), "
        "24 written by hand (scripts/icl_cot_problems.py)",
        columns=("question", "rationale", "answer", "template"),
        files={"train": "arithmetic_cot/train.jsonl", "test": "arithmetic_cot/test.jsonl"},
    ),
    "rankings": BundledDataset(
        name="rankings",
        description="K = 4 answers of smollm2-135m to opinion/review prompts, ranked by VADER sentiment (most "
        "positive first), VADER compound kept as the gold score; 96 train / 32 test prompts, test prompts held out",
        source="sampled from smollm2-135m by scripts/make_ranking_data.py; scored by the VADER lexicon and rules "
        "(Hutto & Gilbert 2014, MIT licence; PyPI vaderSentiment 3.3.2)",
        columns=("prompt", "completions", "ranking", "ties", "gold", "finished", "question", "subject", "template"),
        files={"train": "rankings/train.jsonl", "test": "rankings/test.jsonl"},
    ),
    "pydoc": BundledDataset(
        name="pydoc",
        description="English prose paragraphs of the Python reference manual for language modelling; "
        "the last 10% of topics (sorted by key) form the test split",
        source="Python's standard library pydoc_data.topics (PSF licence), built at run time",
        columns=("text",),
        build=_build_pydoc,
    ),
    "pydoc_pairs": BundledDataset(
        name="pydoc_pairs",
        description="sentence triplets for embeddings: anchor, next sentence of its paragraph (positive), a "
        "sentence of the same topic elsewhere (related), one of another topic (negative); 635 train / 109 "
        "test rows, test topics held out",
        source="Python's standard library pydoc_data.topics (PSF licence, Python 3.11.7), written by "
        "scripts/make_embed_data.py; labels come from the manual's structure, not from human ratings",
        columns=("anchor", "positive", "related", "negative", "topic"),
        files={"train": "pydoc_pairs/train.jsonl", "test": "pydoc_pairs/test.jsonl"},
    ),
}
"""Every bundled data set by name."""


def _lookup(name: str) -> BundledDataset:
    if name not in BUNDLED:
        raise HfxError(
            f"unknown bundled data set '{name}'{did_you_mean(name, BUNDLED)}; bundled: {', '.join(sorted(BUNDLED))}"
        )
    return BUNDLED[name]


def bundled_path(name: str, split: str | None = None) -> Path:
    """Return the folder of bundled data set ``name``, or the file of one of its splits.

    Args:
        name: A key of :data:`BUNDLED` (``sentiment``, ``pydoc_pairs``, ...).
        split: A split name (``train``, ``test``), or None for the data set's folder.

    Raises:
        HfxError: an unknown name or split (with the nearest one), or a data set built at run time
            (``pydoc``), which has no file.
    """
    spec = _lookup(name)
    if not spec.files:
        raise HfxError(
            f"bundled data set '{name}' is built at run time and has no files; load it with load_bundled"
        )
    if split is None:
        return BUNDLED_DIR / name
    if split not in spec.files:
        raise HfxError(f"bundled data set '{name}' has no split '{split}'; splits: {', '.join(spec.files)}")
    return BUNDLED_DIR / spec.files[split]


def load_bundled(name: str) -> datasets.DatasetDict:
    """Load bundled data set ``name`` as a DatasetDict with its own split names ("train", "test")."""
    spec = _lookup(name)
    if spec.build is not None:
        return spec.build()
    splits = {}
    for split, rel in spec.files.items():
        table = pa_json.read_json(BUNDLED_DIR / rel)
        features = datasets.Features.from_arrow_schema(table.schema)
        if spec.label_names:  # int labels as ClassLabel, so recipes can read id2label from the features
            features["label"] = datasets.ClassLabel(names=list(spec.label_names))
        splits[split] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
    return datasets.DatasetDict(splits)
