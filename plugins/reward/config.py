"""Config of the ``reward`` plugin.

:class:`RewardConfig` is what ``hfx.apply(model, "reward", ...)`` and :class:`hfx.RewardTrainer` take: trl's
``RewardConfig`` field names where trl has the field (``max_length``, ``center_rewards_coefficient``), then
hfx's own (the K-way loss, the final shift, which layers train). :class:`RewardRunConfig` adds what only
``hfx run plugin=reward`` uses (the gold column and evaluation sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

from hfx.errors import HfxError

__all__ = ["LOSS_TYPES", "RewardConfig", "RewardRunConfig"]

LOSS_TYPES = ("ranking", "pairwise")


@dataclass
class RewardConfig:
    """A scalar reward model trained from rankings (InstructGPT, https://arxiv.org/abs/2203.02155) or pairs (trl)."""

    max_length: int = 1024
    """Longest scored text in tokens (trl's max_length); a longer one is cut from the end, with a warning."""
    append_eos: bool = True
    """Append the tokenizer's EOS to every scored text that lacks it (as trl does), so the score is read at EOS."""
    loss_type: str = "ranking"
    """ranking: all C(K,2) pairs of a prompt form one batch element (InstructGPT); pairwise: every pair on its
    own, trl RewardTrainer's loss. Pairwise data (chosen/rejected) is a ranking of K = 2: both agree there."""
    center_rewards_coefficient: float = 0.0
    """trl's reward centering: adds coefficient x mean(r^2) over the batch's scores (Eisenstein et al. 2023,
    https://arxiv.org/abs/2312.09244); 0 turns it off (trl's None)."""
    shift_to_zero_mean: bool = True
    """After training, shift the scores so the mean score over the training completions is 0 (InstructGPT
    sets the reward model's bias so demonstrations score 0 on average before RL)."""
    trainable_layers: int = -1
    """Which weights train: -1 every weight; N >= 0 only the score head, the final norm and the last N
    transformer blocks (the rest frozen)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise HfxError(f"reward.max_length must be an integer >= 2 (tokens), got {self.max_length!r}")
        if self.loss_type not in LOSS_TYPES:
            raise HfxError(f"reward.loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.center_rewards_coefficient is None:  # trl's spelling of "off"
            self.center_rewards_coefficient = 0.0
        if self.center_rewards_coefficient < 0:
            raise HfxError(f"reward.center_rewards_coefficient must be >= 0 (trl suggests 0.01), "
                           f"got {self.center_rewards_coefficient}")
        if not isinstance(self.trainable_layers, int) or self.trainable_layers < -1:
            raise HfxError(f"reward.trainable_layers must be -1 (all weights) or a number of last blocks >= 0, "
                           f"got {self.trainable_layers!r}")


@dataclass
class RewardRunConfig(RewardConfig):
    """The ``reward:`` section of ``hfx run``: :class:`RewardConfig` plus what only the recipe uses."""

    gold_column: str = "gold"
    """Column with the true score of each completion (one per completion); reported as the Spearman
    correlation of the reward model's scores with it. Empty: no gold judgement in the data."""
    eval_batch_size: int = 32
    """Texts scored per forward pass in evaluation (and in filling the frozen-block cache)."""
    cache_frozen: bool = True
    """With ``trainable_layers`` >= 0 on a decoder, run the frozen blocks once per training text, keep their
    output in memory (texts x tokens x hidden x 4 bytes) and train on the top blocks alone: the same scores
    and gradients, checked on the first texts before it is used (hfx_plugins.reward.frozen). False: every
    step runs the whole model."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_batch_size < 1:
            raise HfxError(f"reward.eval_batch_size must be >= 1, got {self.eval_batch_size}")
