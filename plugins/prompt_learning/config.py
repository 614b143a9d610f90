"""Checks of the fields the two prompt-learning configs share (torch-free).

``prefix_tuning`` and ``prompt_tuning`` take peft 0.21.2's ``PromptLearningConfig`` fields
(``peft/config.py``): ``num_virtual_tokens``, the sizes ``token_dim``, ``num_transformer_submodules``,
``num_attention_heads`` and ``num_layers`` (unset: read from the model config, see
:func:`hfx.prompt_learning.fill_sizes`) and ``task_type``.
"""

from __future__ import annotations

from hfx.errors import HfxError

__all__ = ["TASK_TYPES", "check_prompt_learning"]

TASK_TYPES = ("", "CAUSAL_LM", "SEQ_2_SEQ_LM")
"""The peft task types prompt learning serves; empty: inferred from the model class."""


def check_prompt_learning(cfg: object, plugin: str) -> None:
    """Check the shared fields: a positive integer token count, positive optional sizes, 1 or 2 submodules.

    Args:
        cfg: A prefix_tuning or prompt_tuning config.
        plugin: Its section name, for the messages.

    Raises:
        HfxError: the first field out of range, named as ``<plugin>.<field>``.
    """
    n = cfg.num_virtual_tokens  # type: ignore[attr-defined]
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise HfxError(f"{plugin}.num_virtual_tokens must be a positive integer (the number of virtual tokens), got {n!r}")
    for key in ("token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"):
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            raise HfxError(f"{plugin}.{key} must be positive or unset (read from the model config), got {value}")
    if cfg.num_transformer_submodules not in (None, 1, 2):  # type: ignore[attr-defined]
        raise HfxError(f"{plugin}.num_transformer_submodules must be 1 (decoder), 2 (encoder-decoder) or unset")
    task_type = cfg.task_type  # type: ignore[attr-defined]
    if task_type not in TASK_TYPES:
        raise HfxError(f"{plugin}.task_type must be CAUSAL_LM, SEQ_2_SEQ_LM or empty (inferred), got {task_type!r}")
