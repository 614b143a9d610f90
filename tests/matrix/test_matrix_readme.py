"""README.md's section "What composes, on which architectures" is the table mx_table.py generates: every cell
of both matrices, each fault the registered one, and the Markdown exactly as ``render`` writes it from those
cells (the cell tests check each cell's outcome against the same entries)."""

from __future__ import annotations

import itertools

from mx_architectures import cells
from mx_composition import PLUGINS
from mx_faults import FAULTS
from mx_outcomes import layout
from mx_table import README, parse, render, section


def test_the_readme_section_lists_every_cell_and_is_the_rendered_table() -> None:
    text = README.read_text()
    comp, arch = parse(text)
    assert set(comp) == {f"{a}+{b}" for a, b in itertools.product(PLUGINS, PLUGINS)}
    assert set(arch) == {f"{n}:{p}" for n, p in cells()}
    faults = {k: v for k, v in {**comp, **arch}.items() if v.startswith("fault: ")}
    assert faults == {k: f"fault: {v}" for k, v in FAULTS.items()}
    assert section(text) == render(comp, arch, *layout())
    assert "## What composes, on which architectures" in text
