"""Result tables: one terminal printer (rich) and one Markdown writer, for every recipe, command and benchmark.

A table is a list of rows, each a mapping from column name to value, every row with the same columns (the first
row's order). Cells are written by one rule (:func:`format_cell`): ``None`` empty, floats with ``float_format``
(4 significant digits unless the caller asks otherwise), anything else ``str()``; a caller with its own rule
(thousands separators, "-" for not measured) passes the cells already as strings. In the terminal a column
whose cells all read as numbers is right-aligned, any other left-aligned, and long text folds onto more lines
(never cut); text is escaped for rich's markup
unless ``markup=True`` (``hfx validate`` colours its verdicts). Importing this module imports neither rich nor
torch (``hfx plugins`` and config errors stay light).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_cell", "markdown_table", "print_table"]

Row = Mapping[str, Any]
_NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?%?$|^(nan|inf|-inf|-)?$", re.IGNORECASE)


def format_cell(value: Any, float_format: str = ".4g") -> str:
    """One cell as text: ``None`` -> "", a float with ``float_format`` (``format(value, float_format)``), else str()."""
    if value is None:
        return ""
    return format(value, float_format) if isinstance(value, float) else str(value)


def _columns(rows: Sequence[Row], columns: Sequence[str] | None) -> list[str]:
    return list(columns) if columns is not None else (list(rows[0]) if rows else [])


def _cells(rows: Sequence[Row], columns: list[str], float_format: str,
           formats: Mapping[str, str] | None) -> list[list[str]]:
    formats = formats or {}
    return [[format_cell(r.get(c), formats.get(c, float_format)) for c in columns] for r in rows]


def print_table(title: str, rows: Sequence[Row], *, columns: Sequence[str] | None = None, float_format: str = ".4g",
                formats: Mapping[str, str] | None = None, justify: Mapping[str, str] | None = None,
                min_width: int | None = None, markup: bool = False) -> None:
    """Print ``rows`` as one rich table titled ``title``; nothing when there are no rows.

    Args:
        title: The table's title.
        rows: One mapping per row; ``columns`` (default: the first row's keys) picks and orders the columns.
        float_format: How floats are written (``format`` spec), for every column not in ``formats``.
        formats: Per-column ``format`` specs for floats (icl's ``{"score": ".3f"}``).
        justify: Per-column "left" / "right", overriding the rule (numbers right, anything else left).
        min_width: Lay the table out at least this wide even in a pipe (rich's default follows the terminal).
        markup: Interpret rich markup in the cells (``[green]pass[/green]``) instead of printing it verbatim.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not rows:
        return
    cols = _columns(rows, columns)
    cells = _cells(rows, cols, float_format, formats)
    table = Table(title=title)
    for i, col in enumerate(cols):
        numeric = all(_NUMBER.match(r[i].strip()) for r in cells)
        table.add_column(escape(col), justify=(justify or {}).get(col, "right" if numeric else "left"), overflow="fold")
    for r in cells:
        table.add_row(*(c if markup else escape(c) for c in r))
    console = Console() if min_width is None else Console(width=max(min_width, Console().width))
    console.print(table)


def markdown_table(rows: Sequence[Row], *, columns: Sequence[str] | None = None, float_format: str = ".4g",
                   formats: Mapping[str, str] | None = None) -> str:
    """``rows`` as a GitHub Markdown table (header, ``|---|`` rule, one line per row, each ending in a newline);
    "" when there are no rows. Cells are written as :func:`print_table` writes them."""
    if not rows:
        return ""
    cols = _columns(rows, columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in _cells(rows, cols, float_format, formats)]
    return "\n".join(lines) + "\n"
