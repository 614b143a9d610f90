"""Shared fixtures: tiny random models saved once per session, a private HFX_CACHE, and an in-process CLI.

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

