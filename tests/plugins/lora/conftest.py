"""The lora tests run on one torch thread (tests/conftest.py's ``one_thread``, made automatic here), and import
their shared helpers (lora_helpers.py) from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lora_helpers


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_thread: None) -> None:
    """Every module of this folder on one thread: tiny matmuls gain nothing from threads."""
