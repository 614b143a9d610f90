"""Checks of the label-word classification task that several recipes train and score on (torch-free).

A recipe of this kind formats each example with ``template`` (which holds ``{text}``) and scores each class
by the log-likelihood of its label word as the continuation (see :mod:`hfx.runner.label_words`).
"""

from __future__ import annotations

from hfx.errors import HfxError

__all__ = ["check_label_task"]


def check_label_task(section: str, template: str, label_words: list[str]) -> None:
    """Check a recipe's template and label words.

    Args:
        section: The config section the fields live in (``prompt_tuning``), for the error message.
        template: Prompt of one example; must contain ``{text}``.
        label_words: Continuation of each class, in label order.

    Raises:
        HfxError: ``{text}`` missing from the template, or fewer than 2 distinct label words.
    """
    if "{text}" not in template:
        raise HfxError(f"{section}.template must contain {{text}}, got {template!r}")
    if len(label_words) < 2 or len(set(label_words)) != len(label_words):
        raise HfxError(f"{section}.label_words must be 2 or more distinct words, got {label_words!r}")
