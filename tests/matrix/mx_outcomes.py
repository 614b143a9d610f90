"""Every cell of both matrices run once, for the README generator (``mx_table.py``)."""

from __future__ import annotations

import itertools

from mx_architectures import ARCH_PLUGINS, cells, run_cell
from mx_composition import PLUGINS, run_pair
from mx_configs import ARCHS
from mx_faults import FAULTS

__all__ = ["all_outcomes", "layout"]


def layout() -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """The grids' rows and columns: plugins (composition), model types with what they stand for, their plugins."""
    return list(PLUGINS), [(a.name, a.what) for a in ARCHS], list(ARCH_PLUGINS)


def _one(key: str, run: object, *args: str, failures: dict[str, str]) -> str:
    try:
        text = str(run(*args))  # type: ignore[operator]
    except Exception as err:  # noqa: BLE001 - AssertionError or a crash: a registered fault, else a failure
        if key in FAULTS:
            return f"fault: {FAULTS[key]}"
        failures[key] = f"{type(err).__name__}: {err}"
        return "fault: unregistered"
    if key in FAULTS:
        failures[key] = f"registered as a fault but now gives {text!r}: remove it from mx_faults.FAULTS"
    return text


def all_outcomes() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(composition, architectures, failures)``: each cell's outcome string (``pass``, ``refused at ...``,
    ``fault: ...``, ``n/a: ...``), and the cells that are neither a pass, a clean refusal nor a registered fault."""
    failures: dict[str, str] = {}
    comp = {f"{a}+{b}": _one(f"{a}+{b}", run_pair, a, b, failures=failures)
            for a, b in itertools.product(PLUGINS, PLUGINS)}
    arch = {f"{n}:{p}": _one(f"{n}:{p}", run_cell, n, p, failures=failures) for n, p in cells()}
    return comp, arch, failures
