"""The prompt_tuning tests run single-threaded (as the lora tests do): tiny matmuls gain
nothing from threads, and on a shared 2-core machine two threads per process made 20 training steps 20x slower (7.9 s against 0.34 s, measured here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
