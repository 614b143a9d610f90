"""The README section "What composes, on which architectures": written from the cells' outcomes, read back by
the tests.

    python tests/matrix/mx_table.py          # run every cell, rewrite the section of README.md
    python tests/matrix/mx_table.py --check  # run every cell, exit 1 if the README differs

Each grid shows a mark per cell: ``✓`` passed every check, ``R<n>`` a clean refusal, ``F<n>`` a known fault (a
strict xfail in ``faults.py``), ``·`` not a cell (the plugin does not apply to that family, said in the note).
The numbered notes under each grid give the refusal or the fault in full; the tests compare every cell's
outcome with its README entry, so the README cannot drift from what the code does.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["README", "parse", "render", "section"]

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- matrix:start (written by tests/matrix/mx_table.py) -->", "<!-- matrix:end -->"
_MARKS = {"refused": "R", "fault": "F", "n/a": "·"}


def _label(text: str) -> str:
    """The kind of an outcome string: pass, refused, fault or n/a."""
    return "pass" if text == "pass" else text.split(" ", 1)[0].rstrip(":")


def _grid(title: str, rows: list[str], cols: list[str], cells: dict[str, str], sep: str, refused: str) -> list[str]:
    out = [f"| {title} | " + " | ".join(f"`{c}`" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    notes, counts = [], {"pass": 0, "refused": 0, "fault": 0, "n/a": 0}
    for r in rows:
        marks = []
        for c in cols:
            key = f"{r}{sep}{c}"
            text = cells[key]
            kind = _label(text)
            counts[kind] += 1
            if kind == "pass":
                marks.append("✓")
                continue
            if kind == "n/a":
                marks.append("·")
                continue
            notes.append(f"- {_MARKS[kind]}{len(notes) + 1} `{key}`: {text}")
            marks.append(f"{_MARKS[kind]}{len(notes)}")
        out.append(f"| `{r}` | " + " | ".join(marks) + " |")
    total = sum(counts.values()) - counts["n/a"]
    summary = (f"{total} cells: {counts['pass']} pass, {counts['refused']} refused in one line {refused}, "
               f"{counts['fault']} known faults (strict xfail).")
    return [summary, "", *out, "", *notes]


def render(comp: dict[str, str], arch: dict[str, str], plugins: list[str], archs: list[tuple[str, str]],
           arch_plugins: list[str]) -> str:
    """The section's Markdown: the composition grid (row: applied first, column: second; the diagonal: the
    plugin alone), the architecture grid (row: model type and what it stands for), and their notes."""
    lines = [START, "", "**Composition** (tiny Llama; row applied first, column second, diagonal alone).",
             *_grid("first \\ then", plugins, plugins, comp, "+", "naming both plugins"), "",
             "**Architectures** (tiny random configs, 2 layers, hidden 32; `·`: not a cell, ppo trains a causal LM "
             "policy).", ""]
    arch_lines = _grid("model type", [a for a, _ in archs], arch_plugins, arch, ":", "saying why")
    what = dict(archs)
    arch_lines = [re.sub(r"^\| `([^`]+)` \|", lambda m: f"| `{m[1]}` ({what[m[1]]}) |", line) for line in arch_lines]
    return "\n".join([*lines, *arch_lines, "", END])


def section(text: str) -> str:
    """The part of the README between the matrix markers, markers included ("" when absent)."""
    if START not in text or END not in text:
        return ""
    return text[text.index(START): text.index(END) + len(END)]


def parse(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The cells of the README's section: ``{"quant+lora": "pass", "t5:reward": "refused at ...", ...}`` for
    the composition grid and the architecture grid."""
    body = section(text)
    notes = dict(re.findall(r"^- [RF·]\d+ `([^`]+)`: (.*)$", body, flags=re.M))
    grids: list[dict[str, str]] = []
    for block in re.split(r"\n\n(?=\| )", body)[1:]:
        rows = [line for line in block.splitlines() if line.startswith("| ")]
        cols = re.findall(r"`([^`]+)`", rows[0])
        cells: dict[str, str] = {}
        sep = "+" if "first" in rows[0] else ":"
        for line in rows[1:]:
            row = re.match(r"\| `([^`]+)`", line)[1]  # type: ignore[index]
            marks = [m.strip() for m in line.strip().strip("|").split("|")[1:]]
            for col, mark in zip(cols, marks, strict=True):
                key = f"{row}{sep}{col}"
                cells[key] = {"✓": "pass", "·": "n/a"}.get(mark) or notes[key]
        grids.append(cells)
    return (grids[0], grids[1]) if len(grids) == 2 else ({}, {})


def main(argv: list[str]) -> int:
    """Run every cell and write (or, with --check, compare) the README section."""
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from mx_outcomes import all_outcomes, layout
    from transformers.utils import logging

    torch.set_num_threads(1)  # as the tests run them
    logging.set_verbosity_error()

    comp, arch, failures = all_outcomes()
    for key, err in failures.items():
        print(f"{key}: FAILS (neither pass, refusal nor registered fault): {err}", file=sys.stderr)
    if failures:
        return 1
    new = render(comp, arch, *layout())
    text = README.read_text()
    if "--check" in argv:
        return 0 if section(text) == new else 1
    if section(text):
        text = text.replace(section(text), new)
    else:
        text = text.rstrip("\n") + "\n\n## What composes, on which architectures\n\n" + new + "\n"
    README.write_text(text)
    print(f"wrote {README}: {len(comp)} composition cells, {len(arch)} architecture cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
