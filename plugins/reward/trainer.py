"""``hfx.RewardTrainer``: a ``transformers.Trainer`` that trains a reward model from rankings or pairs.

    trainer = hfx.RewardTrainer(model=backbone, args=TrainingArguments(...), train_dataset=rows,
                                processing_class=tokenizer, reward_config=hfx_plugins.reward.RewardConfig())
    trainer.train()          # InstructGPT's K-way loss on ranking rows; trl's loss on chosen/rejected rows
    trainer.evaluate()       # eval_accuracy (held-out pairs), eval_spearman (with the gold column, if any)

A drop-in for scripts written for trl's ``RewardTrainer``: same ``chosen``/``rejected``/``margin`` columns
and ``center_rewards_coefficient``, plus ranking rows (``prompt``, ``completions``, ``ranking``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from hfx.errors import HfxError
from hfx_plugins.reward.batching import (
    GroupCollator,
    batch_loss,
    encode_groups,
    evaluate_groups,
    shift_to_zero_mean,
    split_pairs,
)
from hfx_plugins.reward.config import RewardConfig
from hfx_plugins.reward.data import Group, rankings_to_groups
from hfx_plugins.reward.head import RewardModel

__all__ = ["RewardTrainer"]


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class RewardTrainer(Trainer):
    """Train a scalar reward model with ``transformers.Trainer``'s loop (optimizer, schedule, checkpoints, logging).

    Args:
        model: A backbone, ``*ForCausalLM`` or reward model; a model without the reward head gets it through
            ``hfx.apply(model, "reward", cfg=reward_config)``.
        args: ``TrainingArguments``; ``remove_unused_columns`` is set to False (batches are built here).
        train_dataset: Ranking or pairwise rows (a list of dicts or a ``datasets.Dataset``).
        eval_dataset: Held-out rows of either format.
        processing_class: The reward model's tokenizer.
        reward_config: The loss, centering, shift and length settings (:class:`RewardConfig`).
        gold_column: Column of ranking rows with each completion's true score (reported as ``spearman``).
        **kwargs: Passed on to ``transformers.Trainer``.

    Raises:
        HfxError: no tokenizer, or malformed rows (named).
    """

    def __init__(self, model: nn.Module, args: TrainingArguments | None = None,
                 train_dataset: Iterable[Mapping[str, Any]] | None = None,
                 eval_dataset: Iterable[Mapping[str, Any]] | None = None,
                 processing_class: PreTrainedTokenizerBase | None = None,
                 reward_config: RewardConfig | None = None, gold_column: str = "gold", **kwargs: Any) -> None:
        if processing_class is None:
            raise HfxError("RewardTrainer needs processing_class=<the reward model's tokenizer>")
        self.reward_config = cfg = reward_config or RewardConfig()
        if not isinstance(model, RewardModel):
            from hfx.api import apply

            model = apply(model, "reward", cfg=cfg)
        args = args or TrainingArguments(output_dir="reward_model", report_to="none")
        args.remove_unused_columns = False
        self.train_groups = rankings_to_groups(train_dataset, gold_column) if train_dataset is not None else []
        self.eval_groups = rankings_to_groups(eval_dataset, gold_column) if eval_dataset is not None else []
        train_units: list[Group] = split_pairs(self.train_groups) if cfg.loss_type == "pairwise" else self.train_groups
        collator = GroupCollator(processing_class.pad_token_id, processing_class.padding_side)
        super().__init__(
            model=model, args=args, data_collator=collator, processing_class=processing_class,
            train_dataset=_Items(encode_groups(train_units, processing_class, cfg)) if train_units else None,
            eval_dataset=_Items(encode_groups(self.eval_groups, processing_class, cfg)) if self.eval_groups else None,
            **kwargs,
        )

    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The configured loss (:func:`hfx_plugins.reward.losses.preference_loss`); stops on NaN/inf with the step.

        Args:
            inputs: A :class:`~hfx_plugins.reward.batching.GroupCollator` batch: ``input_ids``/``attention_mask``
                (N, T) over the N texts, ``winners``/``losers``/``groups`` (P,) over the ranked pairs.

        Returns:
            The scalar loss, or ``(loss, {})`` when ``return_outputs`` (``transformers.Trainer``'s contract,
            as trl's ``RewardTrainer.compute_loss``).

        Raises:
            HfxError: a NaN or infinite score or loss, naming the step.
        """
        step = self.state.global_step + 1 if model.training else None
        loss = batch_loss(model, inputs, self.reward_config, step)
        return (loss, {}) if return_outputs else loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, torch.Tensor], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[torch.Tensor, None, None]:
        """The evaluation loss of one batch (no logits: the ranking metrics come from :meth:`evaluate`).

        ``inputs`` as :meth:`compute_loss` takes them ((N, T) texts, (P,) pairs); returns ``(loss, None, None)``,
        the loss a scalar tensor.

        Raises:
            HfxError: a NaN or infinite score or loss.
        """
        with torch.no_grad():
            loss = batch_loss(model, self._prepare_inputs(inputs), self.reward_config)
        return loss.detach(), None, None

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Trainer's eval loss plus held-out pairwise ``accuracy``, score ``margin`` and ``spearman`` with gold."""
        groups = rankings_to_groups(eval_dataset) if eval_dataset is not None else self.eval_groups
        metrics = super().evaluate(None if eval_dataset is None else _Items(encode_groups(groups, self.processing_class,
                                   self.reward_config)), ignore_keys, metric_key_prefix)
        extra = evaluate_groups(self.model, self.processing_class, groups, self.reward_config,
                                self.args.per_device_eval_batch_size)
        extra = {f"{metric_key_prefix}_{k}": v for k, v in extra.items()}
        self.log(extra)
        return {**metrics, **extra}

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Trainer's train, then (``shift_to_zero_mean``) shift the scores so the mean training score is 0."""
        out = super().train(*args, **kwargs)
        if self.reward_config.shift_to_zero_mean and self.train_groups:
            old = shift_to_zero_mean(self.model, self.processing_class, self.train_groups, self.reward_config,
                                     self.args.per_device_eval_batch_size)
            self.log({"reward_shift": -old})
        return out
