"""What the two prompt-learning configs share (torch-free): peft's common fields and the recipe's label-word task.

``prefix_tuning`` and ``prompt_tuning`` take peft 0.21.2's ``PromptLearningConfig`` fields
(``peft/config.py``): ``num_virtual_tokens``, the sizes ``token_dim``, ``num_transformer_submodules``,
``num_attention_heads`` and ``num_layers`` (unset: read from the model config, see
:func:`hfx_plugins.prompt_learning.fill_sizes`) and ``task_type``; :func:`check_prompt_learning` checks them.
Their ``hfx run`` sections add the label-word classification task (:class:`LabelWordTask`: ``template`` and
``label_words``, trained and scored by :class:`hfx_plugins.prompt_learning.LabelWordRecipe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hfx.errors import HfxError

__all__ = ["TASK_TYPES", "LabelWordTask", "check_label_task", "check_prompt_learning"]

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


@dataclass
class LabelWordTask:
    """The label-word classification task of the prompt-learning recipes: the fields only ``hfx run`` reads.

    Listed first among the bases of a plugin's run config, after its method config in field order::

        @dataclass
        class PromptTuningRunConfig(LabelWordTask, PromptTuningConfig):
            section = "prompt_tuning"
    """

    section: ClassVar[str] = ""  # the config section (the plugin's name), for the error messages

    template: str = "Sentence: {text}\nLabel:"
    """Prompt of one example; {text} is the example's text. The label word is its continuation."""
    label_words: list[str] = field(default_factory=lambda: [" foo", " bar"])
    """Continuation of each class, in label order (bundled sentiment_foobar: foo = negative, bar = positive);
    accuracy picks the one of highest log-likelihood."""

    def __post_init__(self) -> None:
        post_init = getattr(super(), "__post_init__", None)
        if post_init is not None:  # the method config's own checks first
            post_init()
        check_label_task(self.section, self.template, self.label_words)
