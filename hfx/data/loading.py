"""Load a recipe's data: a bundled data set, a local file, or a folder, as "train" and "eval" splits.

Local files are read with pyarrow (JSON lines, JSON, CSV, parquet) and folders written by
``save_to_disk`` with ``datasets.load_from_disk``: nothing here reaches the network, writes to a cache,
or unpickles anything. The configured columns are renamed to the names the collators use:
``text``, ``text_pair``, ``label`` and ``target``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from hfx.data.bundled import BUNDLED, load_bundled
from hfx.data.config import DataConfig
from hfx.errors import HfxError, did_you_mean

__all__ = ["EXTENSIONS", "DataConfig", "load_data", "read_source"]

logger = logging.getLogger(__name__)

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
"""File types ``load_data`` reads."""
_CANONICAL = {
    "text_column": "text",
    "text_pair_column": "text_pair",
    "label_column": "label",
    "target_column": "target",
}
_EVAL_ALIASES = ("validation", "valid", "dev", "eval", "test")


def _read_json(path: Path) -> pa.Table:
    """A JSON array of records, JSON lines, or an object holding one list of records."""
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        return pa.Table.from_pylist(json.loads(path.read_text(encoding="utf-8")))
    try:
        return pa_json.read_json(path)
    except pa.ArrowInvalid:
        obj = json.loads(path.read_text(encoding="utf-8"))  # e.g. {"data": [{...}, ...]}
        lists = [v for v in obj.values() if isinstance(v, list)] if isinstance(obj, dict) else []
        if len(lists) != 1:
            raise HfxError(f"cannot read {path}: expected JSON lines or a list of records") from None
        return pa.Table.from_pylist(lists[0])


def _read_file(path: Path) -> datasets.Dataset:
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            table = _read_json(path)
        elif suffix == ".csv":
            table = pa_csv.read_csv(path)
        elif suffix == ".parquet":
            table = pq.read_table(path)
        else:
            raise HfxError(
                f"cannot read '{path}': unknown file type '{suffix}'; use one of {', '.join(EXTENSIONS)}"
            )
    except (pa.ArrowInvalid, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HfxError(f"cannot read {path}: {str(err).splitlines()[0]}; check the file's format") from None
    return datasets.Dataset(table)


def _read_folder(path: Path) -> datasets.DatasetDict:
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        loaded = datasets.load_from_disk(
            str(path), keep_in_memory=True
        )  # in memory: map() writes no cache here
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    shards: dict[str, list[Path]] = {}
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix.lower() in EXTENSIONS:
            # "train.jsonl" and shards such as "train-00000-of-00002.parquet" both belong to split "train"
            shards.setdefault(re.split(r"[-.]", file.name)[0], []).append(file)
    if not shards:
        raise HfxError(
            f"folder {path} holds no data files ({', '.join(EXTENSIONS)}) and no save_to_disk data set; "
            "name files by split, e.g. train.jsonl and test.jsonl"
        )
    return datasets.DatasetDict(
        {
            split: datasets.concatenate_datasets([_read_file(f) for f in files])
            for split, files in shards.items()
        }
    )


def read_source(path: str) -> datasets.DatasetDict:
    """Read ``path`` (bundled name, file or folder) with the splits it has; a single file is split "train".

    Args:
        path: A bundled data set name, a JSONL/JSON/CSV/parquet file, a folder of such files named by split,
            or a folder written by ``datasets``' ``save_to_disk``.

    Raises:
        HfxError: an empty or missing path (with the nearest bundled name), an unreadable file, or a folder
            with no data files.
    """
    if not path:
        raise HfxError(
            f"data.path is empty; set data.path to a bundled data set ({', '.join(BUNDLED)}) or a file"
        )
    if path in BUNDLED and "/" not in path:  # write ./sentiment for a local folder of that name
        return load_bundled(path)
    local = Path(path).expanduser()
    if not local.exists():
        raise HfxError(
            f"data path '{path}' does not exist{did_you_mean(path, BUNDLED)}; set data.path to a local file or "
            f"folder, or to a bundled data set: {', '.join(sorted(BUNDLED))}"
        )
    if local.is_dir():
        return _read_folder(local)
    return datasets.DatasetDict({"train": _read_file(local)})


def _check_columns(splits: datasets.DatasetDict, required: Sequence[str], cfg: DataConfig) -> None:
    for split, ds in splits.items():
        for col in required:
            if col in ds.column_names:
                continue
            fields = [f for f in _CANONICAL if getattr(cfg, f) == col]
            hint = f"set data.{fields[0]}=<column>" if fields else "set the data.*_column options"
            raise HfxError(
                f"data column '{col}' not found in {cfg.path} (split '{split}'); available columns: "
                f"{', '.join(ds.column_names)}{did_you_mean(col, ds.column_names)}; {hint}"
            )


def _rename(ds: datasets.Dataset, cfg: DataConfig) -> datasets.Dataset:
    """Rename the configured columns to text / text_pair / label / target."""
    for f, canonical in _CANONICAL.items():
        col = getattr(cfg, f)
        if not col or col == canonical or col not in ds.column_names:
            continue
        if canonical in ds.column_names:  # another column already has the name: the configured one wins
            ds = ds.remove_columns(canonical)
        ds = ds.rename_column(col, canonical)
    return ds


def _encode_labels(splits: datasets.DatasetDict) -> datasets.DatasetDict:
    """String labels -> ClassLabel with the sorted names of all splits (same ids in train and eval)."""
    if not all(
        "label" in ds.column_names
        and getattr(ds.features["label"], "dtype", "") in ("string", "large_string")
        for ds in splits.values()
    ):
        return splits
    names = sorted({str(v) for ds in splits.values() for v in ds["label"]})
    return datasets.DatasetDict(
        {k: ds.cast_column("label", datasets.ClassLabel(names=names)) for k, ds in splits.items()}
    )


def load_data(cfg: DataConfig, *, seed: int = 0, required: Sequence[str] = ()) -> datasets.DatasetDict:
    """Load ``cfg.path`` as a DatasetDict with splits "train" and "eval", columns renamed to canonical names.

    ``required`` names source columns (as configured, e.g. ``[cfg.text_column, cfg.label_column]``) that
    must exist; a missing one raises HfxError with the available columns. Without an eval split
    (``cfg.eval_split``, else validation/valid/dev/eval/test), ``cfg.eval_fraction`` of train is held
    out with ``seed``.

    Args:
        cfg: The ``data:`` section.
        seed: Seeds the held-out split.
        required: Source column names that must exist.

    Returns:
        ``DatasetDict`` with "train" and "eval", columns ``text``/``text_pair``/``label``/``target``, string
        labels encoded as ``ClassLabel`` with the same ids in both splits.

    Raises:
        HfxError: the path cannot be read (see :func:`read_source`), the train split or a required column is
            missing, or ``eval_fraction`` is outside (0, 1) when it is needed.
    """
    source = read_source(cfg.path)
    if cfg.train_split not in source:
        raise HfxError(
            f"split '{cfg.train_split}' not found in {cfg.path}; splits: {', '.join(source)}"
            f"{did_you_mean(cfg.train_split, source)}; set data.train_split=..."
        )
    candidates = [cfg.eval_split, *_EVAL_ALIASES]
    eval_name = next((s for s in candidates if s in source and s != cfg.train_split), None)
    if eval_name is not None:
        if eval_name != cfg.eval_split:
            logger.info("no split '%s' in %s: evaluating on split '%s'", cfg.eval_split, cfg.path, eval_name)
        splits = datasets.DatasetDict({"train": source[cfg.train_split], "eval": source[eval_name]})
    else:
        if not 0.0 < cfg.eval_fraction < 1.0:
            raise HfxError(f"data.eval_fraction={cfg.eval_fraction} must be between 0 and 1 (exclusive)")
        held = source[cfg.train_split].train_test_split(test_size=cfg.eval_fraction, seed=seed)
        splits = datasets.DatasetDict({"train": held["train"], "eval": held["test"]})
    _check_columns(splits, required, cfg)
    splits = _encode_labels(datasets.DatasetDict({k: _rename(ds, cfg) for k, ds in splits.items()}))
    for split, limit in (("train", cfg.max_train_samples), ("eval", cfg.max_eval_samples)):
        if limit > 0 and limit < len(splits[split]):
            splits[split] = splits[split].select(range(limit))
    return splits
