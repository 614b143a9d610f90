"""The prefix_tuning tests run on one torch thread (tests/conftest.py's ``one_thread``, made automatic here)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_thread: None) -> None:
    """Every module of this folder on one thread: tiny matmuls gain nothing from threads."""
