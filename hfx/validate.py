"""``hfx validate``: compare each plugin with the reference library that does the same job.

A plugin's ``checks()`` returns :class:`Check` objects. Each runs a small computation in hfx and in the
reference library (transformers, peft, bitsandbytes, sentence-transformers, trl) on the same inputs and
returns the largest difference; the check passes when it is within ``tolerance``.
"""

from __future__ import annotations

import importlib.metadata
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hfx import registry

__all__ = ["Check", "CheckResult", "SkipCheck", "installed_version", "print_results", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One comparison against a reference library."""

    name: str
    """What is compared, e.g. "classification logits vs BertForSequenceClassification"."""
    reference: str
    """Distribution name of the reference library (its installed version is reported)."""
    tolerance: float
    """Largest allowed difference."""
    run: Callable[[], float]
    """Computes and returns the largest absolute difference (0.0 for an exact match)."""


class SkipCheck(Exception):  # noqa: N818 (it is not an error: the check cannot run here)
    """Raised by a check that needs a reference library version not installed here (e.g. trl==1.12.0).

    It is reported as "skipped: <message>" and does not fail ``hfx validate``.
    """


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one :class:`Check`: one row of the ``hfx validate`` table.

    Attributes:
        plugin: The plugin whose check this is.
        name: The check's name.
        reference: The reference library's distribution name.
        version: Its installed version ("not installed" when absent).
        max_diff: The largest difference measured (NaN when the check crashed).
        tolerance: The largest difference allowed.
        passed: ``max_diff <= tolerance`` (and finite).
        error: One line saying why a crashed check failed ("" otherwise).
    """

    plugin: str
    name: str
    reference: str
    version: str
    max_diff: float
    tolerance: float
    passed: bool
    error: str = ""


def installed_version(dist: str) -> str:
    """The installed version of the distribution ``dist`` (e.g. ``"peft"``), or ``"not installed"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_checks(plugins: Sequence[str] | None = None) -> list[CheckResult]:
    """Run the checks of ``plugins`` (default: every installed plugin that has checks)."""
    results: list[CheckResult] = []
    for p in [registry.get(n) for n in plugins] if plugins else registry.iter_plugins():
        for check in p.checks() if p.checks else []:
            version = installed_version(check.reference)
            try:
                diff = float(check.run())
                ok = math.isfinite(diff) and diff <= check.tolerance
                results.append(CheckResult(p.name, check.name, check.reference, version, diff, check.tolerance, ok))
            except SkipCheck as err:
                results.append(CheckResult(p.name, check.name, check.reference, version, math.nan, check.tolerance,
                                           True, f"skipped: {err}"))
            except Exception as err:  # a crashing check is a failed check, reported in the table
                line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                tb = traceback.format_exc(limit=-1).strip().splitlines()[-3:]
                results.append(
                    CheckResult(p.name, check.name, check.reference, version, math.nan, check.tolerance, False,
                                line + " | " + " ".join(s.strip() for s in tb[:-1]))
                )
    return results


def print_results(results: Sequence[CheckResult]) -> None:
    """Print one table: check, reference library and version, max difference, tolerance, pass/fail."""
    from rich.markup import escape

    from hfx.tables import print_table

    rows = []
    for r in results:
        verdict = "[green]pass[/green]" if r.passed else f"[red]FAIL[/red] {escape(r.error)}".rstrip()
        if r.passed and r.error.startswith("skipped:"):
            verdict = f"[yellow]{escape(r.error)}[/yellow]"
        rows.append({"plugin": escape(r.plugin), "check": escape(r.name), "reference": f"{r.reference} {r.version}",
                     "max diff": r.max_diff, "tolerance": r.tolerance, "result": verdict})
    print_table("hfx validate", rows, float_format=".3g", justify={"max diff": "right", "tolerance": "right"},
                min_width=150, markup=True)  # markup: the coloured verdicts; every other cell is escaped
