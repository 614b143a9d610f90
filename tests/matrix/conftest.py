"""The matrix tests import their cell runners from this folder (``mx_*.py``), run on one torch thread (tiny
matmuls gain nothing from threads), and read the README's matrix section once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # mx_configs, mx_probes, mx_composition, ...


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_thread: None) -> None:
    """Every module of this folder on one thread."""


@pytest.fixture(scope="session")
def readme_cells() -> tuple[dict[str, str], dict[str, str]]:
    """The README's cells: ``({"quant+lora": "pass", ...}, {"t5:reward": "refused at ...", ...})``."""
    from mx_table import README, parse

    return parse(README.read_text())
