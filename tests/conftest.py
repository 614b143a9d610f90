"""Shared fixtures: tiny random models saved once per session, a private HFX_CACHE, an in-process CLI, and
torch's thread count (one thread where a module asks for it; put back after every test).

Nothing here downloads anything: the tiny models are built in code by :mod:`hfx.testing`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hfx.testing import save_tiny_model

# The tiny test models gain nothing from intra-op threads, and on a shared 2-core machine the threads of
# concurrent processes contend: one thread made an in-process tiny `hfx run` ~4x faster under load.
# HFX_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("HFX_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for a whole test module, its module-scoped fixtures included (whatever
    HFX_TEST_THREADS says); the previous count is put back after the module.

    Request it (``pytestmark = pytest.mark.usefixtures("one_thread")``, or an autouse override in a folder's
    conftest.py) where numbers must not depend on the thread count (a sum split over threads is added in
    another order; runs compared with a one-thread subprocess) or where tiny matmuls only lose to threads: on a
    shared 2-core machine two threads per process made 20 LoRA training steps 20x slower (7.9 s against 0.34 s).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _thread_count_restored() -> Iterator[None]:
    """What a test does to torch's thread count (accelerate sets it for CPU processes) is undone after it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def hfx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test runs with ``HFX_CACHE`` in a temporary folder, so no test reads or fills ~/.cache/hfx."""
    root = tmp_path_factory.mktemp("hfx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HFX_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_models_root: Path) -> Path:
    """A tiny random BERT with a 2-label sequence-classification head, saved with save_pretrained."""
    return save_tiny_model(tiny_models_root / "bert-cls", "bert", "sequence-classification")


@pytest.fixture(scope="session")
def bert0_dir(tiny_models_root: Path) -> Path:
    """A tiny bare BERT with every dropout at 0 (finetune puts its own head on): its loss does not depend on how
    a batch is split, so runs with other batch splits, accumulation or processes can be compared."""
    return save_tiny_model(tiny_models_root / "bert0", "bert", "base", dropout=0.0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_models_root: Path) -> Path:
    """A tiny random Llama causal LM (grouped-query attention), saved with save_pretrained."""
    return save_tiny_model(tiny_models_root / "llama-clm", "llama", "causal-lm")


@pytest.fixture(scope="session")
def tiny_t5_dir(tiny_models_root: Path) -> Path:
    """A tiny random T5 encoder-decoder (seq2seq LM), saved with save_pretrained."""
    return save_tiny_model(tiny_models_root / "t5-s2s", "t5", "seq2seq-lm")


@dataclass
class CliResult:
    """What one ``hfx ...`` call left: its exit status and what it printed."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run the ``hfx`` command in this process: ``cli("run", "plugin=x", ...) -> CliResult``.

    ``main()`` returns the exit status; argparse's ``--help`` and usage errors raise SystemExit, whose code
    is returned the same way. Rich tables are printed 250 columns wide so that no cell is cut.
    """
    from hfx.cli.main import main

    monkeypatch.setenv("COLUMNS", "250")

    def run(*argv: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()  # drop anything printed before this call
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run

