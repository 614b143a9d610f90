"""Fixtures of the distill tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The tiny test models gain nothing from intra-op threads, and on a CPU shared with other jobs
    # OpenMP's spinning threads make each small matmul up to 100x slower. Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
