"""Keep third-party libraries quiet at hfx's default verbosity.

At default verbosity an ``hfx`` command prints only its own progress bars, tables and messages. The libraries
under it talk on their own: transformers' and datasets' per-file progress bars and load reports, a
bitsandbytes warning at import ("Failed to load CPU gemm_4bit_forward from kernels-community ..."), and
``FutureWarning``/``UserWarning`` from torch, transformers or peft. :func:`quiet_libraries` silences them,
without importing any of them (so it costs nothing on ``hfx plugins`` or a config error):

- environment variables the libraries read when first imported (``TRANSFORMERS_VERBOSITY``,
  ``HF_DATASETS_DISABLE_PROGRESS_BARS``, ...), set only where the user has not set them;
- the level of each library's ``logging`` logger, for libraries that log through the standard module
  (bitsandbytes, accelerate, peft, ...); libraries already imported are also told directly;
- a ``warnings.showwarning`` that shows a warning only when hfx code (``hfx``, ``hfx_plugins``) or the
  user's script raised it: a warning raised inside a library is dropped.

``hfx -v ...`` or ``HFX_DEBUG=1`` leaves everything as the libraries set it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

__all__ = ["is_verbose", "quiet_libraries", "set_verbose"]

_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
_LOGGERS = ("accelerate", "bitsandbytes", "datasets", "huggingface_hub", "peft", "sentence_transformers",
            "torch", "transformers", "trl")
_OWN = ("hfx", "hfx_plugins", "__main__")
_verbose = False
_original_showwarning = warnings.showwarning


def set_verbose(verbose: bool) -> None:
    """Record the command line's ``-v``: when true, :func:`quiet_libraries` does nothing."""
    global _verbose
    _verbose = verbose


def is_verbose() -> bool:
    """Whether third-party output is wanted: ``-v`` was given or ``HFX_DEBUG=1`` is set."""
    return _verbose or os.environ.get("HFX_DEBUG") == "1"


def _warned_by_own_code() -> bool:
    """Whether the code that called ``warnings.warn`` belongs to hfx or to the user's script."""
    frame = sys._getframe(2)  # skip this function and the showwarning hook
    while frame is not None and frame.f_globals.get("__name__") == "warnings":
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name.split(".")[0] in _OWN


def _showwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    if _warned_by_own_code():
        _original_showwarning(message, category, filename, lineno, file, line)


def quiet_libraries() -> None:
    """Silence third-party logs, warnings and progress bars, unless :func:`is_verbose` (see the module doc)."""
    if is_verbose():
        return
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported already: its environment variables were read
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    if warnings.showwarning is not _showwarning:
        warnings.showwarning = _showwarning
