"""Preference data for reward models: K-way rankings and trl's pairwise rows, checked and expanded.

Two row formats are read:

- **ranking** (one row per prompt): ``prompt`` (optional, default ""), ``completions`` (K >= 2 non-empty
  texts), ``ranking`` (K integers, 0 = best, as OASST1's sibling ``rank``) and ``ties`` (optional bool).
  Equal ranks are a tie and are allowed only when the row says ``ties: true``; a tied pair states no
  preference and gives no training pair.
- **pairwise** (trl's preference format, read as-is): ``chosen``, ``rejected``, optional ``prompt`` (the
  text scored is ``prompt + chosen``, as trl concatenates it) and optional ``margin`` (a float).

Both become :class:`Group` objects: the completions of one prompt and the ordered (winner, loser) pairs
among them. A pairwise row is a group of K = 2.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hfx.errors import HfxError

__all__ = ["Group", "load_rankings", "rankings_to_groups", "rankings_to_pairs", "row_format"]


@dataclass
class Group:
    """The completions of one prompt and the preferences among them."""

    texts: list[str]
    """``prompt + completion`` for each of the K completions (the text the reward model scores)."""
    pairs: list[tuple[int, int]]
    """(winner, loser) indices into ``texts``: every untied pair, C(K,2) without ties."""
    margin: float | None = None
    """A pairwise row's ``margin`` (trl: the chosen score must beat the rejected one by it)."""
    gold: list[float] = field(default_factory=list)
    """The true score of each completion when the data has one (the bundled set: VADER compound)."""


def row_format(row: Mapping[str, Any]) -> str:
    """``"ranking"`` or ``"pairwise"``, from the row's columns.

    Raises:
        HfxError: the row has neither ``completions`` + ``ranking`` nor ``chosen`` + ``rejected``.
    """
    if "completions" in row and "ranking" in row:
        return "ranking"
    if "chosen" in row and "rejected" in row:
        return "pairwise"
    raise HfxError(f"a preference row needs completions + ranking (a K-way ranking) or chosen + rejected (trl's "
                   f"pairwise format); got columns {sorted(row)}")


def _check_ranking(row: Mapping[str, Any], i: int) -> tuple[list[str], list[int]]:
    """The completions and ranks of ranking row ``i``, checked. Raises HfxError naming the row."""
    completions, ranking = row["completions"], row["ranking"]
    if not isinstance(completions, (list, tuple)) or len(completions) < 2:
        n = len(completions) if isinstance(completions, (list, tuple)) else "no list of"
        raise HfxError(f"ranking row {i}: {n} completions; a ranking needs K >= 2 completions of the same prompt")
    k = len(completions)
    for j, text in enumerate(completions):
        if not isinstance(text, str) or not text.strip():
            raise HfxError(f"ranking row {i}: completion {j} is empty; drop it (and its rank) or the row")
    if not isinstance(ranking, (list, tuple)) or len(ranking) != k:
        raise HfxError(f"ranking row {i}: ranking {ranking!r} must give one rank per completion ({k}), 0 = best")
    for r in ranking:
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < k:
            raise HfxError(f"ranking row {i}: rank {r!r} is out of range; ranks are integers 0 (best) to {k - 1}")
    if len(set(ranking)) < k and not row.get("ties", False):
        raise HfxError(f"ranking row {i}: rank repeated in {list(ranking)} without a declared tie; give distinct "
                       "ranks, or set ties: true on the row if those completions are equally good")
    return [str(t) for t in completions], [int(r) for r in ranking]


def _check_pair(row: Mapping[str, Any], i: int) -> None:
    for key in ("chosen", "rejected"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise HfxError(f"pairwise row {i}: '{key}' is empty; every pair needs two non-empty texts")
    margin = row.get("margin")
    if margin is not None and not isinstance(margin, (int, float)):
        raise HfxError(f"pairwise row {i}: margin {margin!r} must be a number")


def rankings_to_groups(rows: Iterable[Mapping[str, Any]], gold_column: str = "gold") -> list[Group]:
    """Check preference rows (ranking or pairwise, see the module docstring) and turn each into a :class:`Group`.

    Args:
        rows: Dicts, or a ``datasets.Dataset`` (iterated row by row).
        gold_column: Column of ranking rows holding the true score of each completion (kept if present).

    Raises:
        HfxError: K < 2, a rank out of range, a repeated rank without ``ties: true``, an empty completion,
            or a row of neither format; the message names the row (0-based).
    """
    groups = []
    for i, row in enumerate(rows):
        prompt = row.get("prompt") or ""
        if row_format(row) == "pairwise":
            _check_pair(row, i)
            margin = row.get("margin")
            groups.append(Group([prompt + row["chosen"], prompt + row["rejected"]], [(0, 1)],
                                None if margin is None else float(margin)))
            continue
        completions, ranking = _check_ranking(row, i)
        pairs = [(a, b) if ranking[a] < ranking[b] else (b, a)
                 for a, b in itertools.combinations(range(len(completions)), 2) if ranking[a] != ranking[b]]
        if not pairs:
            raise HfxError(f"ranking row {i}: every completion has the same rank; a row must prefer one completion")
        gold = row.get(gold_column) if gold_column else None
        groups.append(Group([prompt + c for c in completions], pairs, None, [float(g) for g in gold or []]))
    if not groups:
        raise HfxError("no preference rows; give ranking rows (prompt, completions, ranking) or pairs (chosen, rejected)")
    return groups


def rankings_to_pairs(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Expand K-way ranking rows into trl's pairwise rows: C(K,2) ordered pairs per row (tied pairs dropped).

    Pairwise rows pass through unchanged. The pairs of a row follow the completions' order: pair (i, j) for
    i < j, winner first. Each output row is ``{"prompt", "chosen", "rejected"}`` (+ ``margin`` if the input
    had one), which trl's ``RewardTrainer`` reads as it is.

    Raises:
        HfxError: a malformed row (see :func:`rankings_to_groups`), naming it.
    """
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if row_format(row) == "pairwise":
            _check_pair(row, i)
            out.append(dict(row))
            continue
        completions, ranking = _check_ranking(row, i)
        prompt = row.get("prompt") or ""
        for a, b in itertools.combinations(range(len(completions)), 2):
            if ranking[a] != ranking[b]:
                w, lose = (a, b) if ranking[a] < ranking[b] else (b, a)
                out.append({"prompt": prompt, "chosen": completions[w], "rejected": completions[lose]})
    return out


def load_rankings(name_or_path: str = "rankings", split: str = "train") -> list[dict[str, Any]]:
    """Rows of a bundled preference set (``"rankings"``) or of a local JSONL/JSON/CSV/Parquet file or folder.

    Raises:
        HfxError: an unknown name or path, or a missing split.
    """
    from hfx.data.loading import read_source

    source = read_source(name_or_path)
    if split not in source:
        raise HfxError(f"{name_or_path} has no split '{split}'; splits: {', '.join(source)}")
    return [dict(r) for r in source[split]]
