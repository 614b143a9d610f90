"""hfx.tables: the one printer and Markdown writer of result tables."""

from __future__ import annotations

import pytest

from hfx.tables import format_cell, markdown_table, print_table

ROWS = [{"method": "fp32", "bits/param": 32.0, "MB (disk)": "-", "change %": None},
        {"method": "hfx [int4]", "bits/param": 4.1875, "MB (disk)": 169.25, "change %": 4.2e-5}]


def test_markdown_by_hand() -> None:
    assert markdown_table(ROWS) == ("| method | bits/param | MB (disk) | change % |\n|---|---|---|---|\n"
                                    "| fp32 | 32 | - |  |\n| hfx [int4] | 4.188 | 169.2 | 4.2e-05 |\n")
    assert markdown_table(ROWS, columns=["method"], formats={"method": ".1f"}) == \
        "| method |\n|---|\n| fp32 |\n| hfx [int4] |\n"
    assert markdown_table([]) == ""
    # float_format "" is str(): icl writes its seconds as they are, its score with 3 decimals
    assert markdown_table([{"score": 0.5, "seconds": 1234.5}], float_format="", formats={"score": ".3f"}) == \
        "| score | seconds |\n|---|---|\n| 0.500 | 1234.5 |\n"


def test_format_cell() -> None:
    assert format_cell(None) == "" and format_cell(3) == "3" and format_cell(0.123456) == "0.1235"
    assert format_cell(0.5, ".4f") == "0.5000"


def test_print_table_aligns_numbers_right_and_escapes_markup(capsys: pytest.CaptureFixture[str]) -> None:
    print_table("t", ROWS, min_width=60)
    out = capsys.readouterr().out
    assert "hfx [int4]" in out  # escaped: rich would otherwise swallow "[int4]" as a style tag
    line = next(x for x in out.splitlines() if "fp32" in x)
    cells = [c for c in line.split("│")[1:-1]]
    assert cells[0].startswith(" fp32") and cells[1].endswith("32 ") and cells[2].endswith("- ")
    print_table("t", [])
    assert capsys.readouterr().out == ""
