"""The composition matrix: every ordered pair of plugins with a drop-in apply on one tiny Llama (the diagonal:
each plugin alone), through forward, generate(), off switches, hfx.save / hfx.load and the reference loader.
What each stage compares with, and where the expected values come from: ``mx_composition``'s docstring.

Each cell's outcome must be the README's entry for it (pass, or the same one-line refusal); a known fault is a
strict xfail (``mx_faults.FAULTS``). After a change: ``python tests/matrix/mx_table.py`` rewrites the README.
"""

from __future__ import annotations

import itertools

import pytest
from mx_composition import PLUGINS, run_pair
from mx_faults import FAULTS

CELLS = [f"{a}+{b}" for a, b in itertools.product(PLUGINS, PLUGINS)]


def _param(cell: str) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=FAULTS[cell])] if cell in FAULTS else []
    return pytest.param(cell, id=cell, marks=marks)


@pytest.mark.parametrize("cell", [_param(c) for c in CELLS])
def test_pair(cell: str, readme_cells: tuple[dict[str, str], dict[str, str]]) -> None:
    a, b = cell.split("+")
    got = str(run_pair(a, b))  # an AssertionError inside names the stage and the measured difference
    if cell in FAULTS:
        return  # reached only when the fault is gone: the strict xfail then fails, saying so
    assert got == readme_cells[0].get(cell), (
        f"{cell}: {got!r}, README says {readme_cells[0].get(cell)!r}; run python tests/matrix/mx_table.py")
