"""User-facing errors.

Every mistake a user can make (a bad override, an unknown plugin, a missing file or column, NaN in a loss)
raises :class:`HfxError` with one line that says what is wrong and what to do. The CLI prints that line
on stderr and exits with status 2; ``HFX_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["HfxError", "did_you_mean"]


class HfxError(Exception):
    """A mistake in the user's input, reported as one line (exit status 2 from the CLI)."""

    exit_code: int = 2


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or ``""`` when none is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
