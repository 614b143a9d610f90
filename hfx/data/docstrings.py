"""More real English that ships with Python: sentences from the docstrings of the standard library.

``pydoc_data.topics`` gives a few thousand sentences; a student that learns a teacher's embeddings wants
more text than that (the teacher labels it, so any prose will do). The docstrings of the running
interpreter's standard library give about 12,000 more, written by people, on every Python install and
offline. Test suites and IDLE are left out, and so is everything installed into site-packages (that would
make the corpus depend on which packages happen to be installed).
"""

from __future__ import annotations

import ast
import random
import sysconfig
from functools import lru_cache
from pathlib import Path

from hfx.data.text import _split_sentences

__all__ = ["stdlib_docstring_sentences"]

_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"})


def stdlib_docstring_sentences(limit: int = 0, min_chars: int = 40, max_chars: int = 300, seed: int = 0) -> list[str]:
    """Up to ``limit`` (0 = all) distinct docstring sentences of the standard library, in a shuffled order.

    A sentence is kept if it starts with a capital letter and its length is within [min_chars, max_chars];
    paragraphs with doctest prompts (``>>>``) or reST literal blocks (``::``) are code, not prose. The order
    is a fixed shuffle (``seed``) of the sorted-file order, so a ``limit`` takes sentences from every module.
    """
    sentences = list(_all_sentences(min_chars, max_chars))
    random.Random(seed).shuffle(sentences)
    return sentences[:limit] if limit else sentences


@lru_cache(maxsize=4)
def _all_sentences(min_chars: int, max_chars: int) -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out: dict[str, None] = {}  # insertion-ordered set
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):  # a few stdlib files are templates or latin-1
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            for para in (doc or "").split("\n\n"):
                para = " ".join(para.split())  # one line
                if ">>>" in para or "::" in para:
                    continue
                for s in _split_sentences(para):
                    if min_chars <= len(s) <= max_chars and s[0].isupper():
                        out[s] = None
    return tuple(out)
