"""``hfx.DPOTrainer``: a ``transformers.Trainer`` that trains a LoRA policy by DPO against its own adapter-free base.

    policy = hfx.apply(model, "lora", r=16, target_modules=["q_proj", "v_proj"])
    trainer = hfx.DPOTrainer(model=policy, args=TrainingArguments(...), train_dataset=rows,
                             processing_class=tokenizer, dpo_config=DPOConfig(beta=0.1, loss_type="sigmoid"))
    trainer.train()

A drop-in for scripts written for trl's ``DPOTrainer`` on plain-text pairs (``prompt``/``chosen``/``rejected``),
which also reads K-way ranking rows (``prompt``, ``completions``, ``ranking``): all ordered pairs, or the best
against the worst. The reference is the policy with its LoRA adapter disabled (one model in memory), as trl's
reference for a fresh peft adapter; trl 1.16 on the same model, data and arguments gives the same losses and
weights (``hfx validate plugin=dpo``).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from hfx.errors import HfxError
from hfx_plugins.dpo.config import DPOConfig
from hfx_plugins.dpo.data import collate_pairs, preference_pairs, tokenize_pair
from hfx_plugins.dpo.logps import disable_dropout, dpo_batch_loss, require_adapter

__all__ = ["DPOTrainer", "PairDataset", "encode_pairs"]


class PairDataset(torch.utils.data.Dataset):
    """Tokenized pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) for a DataLoader."""

    def __init__(self, items: list[dict[str, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def encode_pairs(rows: Iterable[Mapping[str, Any]], tokenizer: Any, max_length: int, pairs: str = "all") -> PairDataset:
    """Pairs of ``rows`` (:func:`~hfx_plugins.dpo.data.preference_pairs`) tokenized as trl does.

    A pair whose prompt alone fills ``max_length`` is dropped (it would keep no completion token), as trl drops it.

    Raises:
        HfxError: what ``preference_pairs`` raises, or no pair left after that filter.
    """
    items = [tokenize_pair(tokenizer, p.get("prompt") or "", p["chosen"], p["rejected"])
             for p in preference_pairs(rows, pairs)]
    kept = [it for it in items if len(it["prompt_ids"]) < max_length]
    if not kept:
        raise HfxError(f"every prompt is at least max_length={max_length} tokens long, so no completion token is "
                       "left to train on; raise max_length")
    return PairDataset(kept)


class DPOTrainer(Trainer):
    """Direct preference optimisation with ``transformers.Trainer``'s loop (optimizer, schedule, logging).

    Args:
        model: A causal LM with a LoRA adapter (``hfx.apply(model, "lora", ...)``); without ``ref_model`` its
            reference is the same model with the adapter disabled.
        args: ``TrainingArguments`` (learning rate, batch size in pairs, steps); ``remove_unused_columns`` is
            set to False (batches are built here).
        train_dataset: Pairwise rows (``prompt``, ``chosen``, ``rejected``) or ranking rows; a list of dicts or
            a ``datasets.Dataset``.
        eval_dataset: Held-out rows of either format.
        processing_class: The policy's tokenizer (its pad token, or EOS when it has none, pads).
        dpo_config: ``beta``, ``loss_type``, ``max_length``, ``disable_dropout`` (:class:`DPOConfig`).
        ref_model: An explicit frozen reference instead of the disabled adapter.
        pairs: For ranking rows: ``"all"`` ordered pairs or ``"best_vs_worst"``.
        **kwargs: Passed on to ``transformers.Trainer``.

    Raises:
        HfxError: no tokenizer; no LoRA adapter and no ``ref_model``; malformed or tied rows (named).
    """

    def __init__(self, model: nn.Module, args: TrainingArguments | None = None,
                 train_dataset: Iterable[Mapping[str, Any]] | None = None,
                 eval_dataset: Iterable[Mapping[str, Any]] | None = None,
                 processing_class: PreTrainedTokenizerBase | None = None, dpo_config: DPOConfig | None = None,
                 ref_model: nn.Module | None = None, pairs: str = "all", **kwargs: Any) -> None:
        if processing_class is None:
            raise HfxError("DPOTrainer needs processing_class=<the policy's tokenizer>")
        if ref_model is None:
            require_adapter(model)
        self.dpo_config = cfg = dpo_config or DPOConfig()
        self.ref_model = ref_model
        if cfg.disable_dropout:
            for m in (model, ref_model):
                if m is not None:
                    disable_dropout(m)
        if processing_class.pad_token is None:  # trl pads with EOS then
            processing_class.pad_token = processing_class.eos_token
        args = args or TrainingArguments(output_dir="dpo_model", report_to="none")
        args.remove_unused_columns = False
        encode = functools.partial(encode_pairs, tokenizer=processing_class, max_length=cfg.max_length, pairs=pairs)
        collator = functools.partial(collate_pairs, pad_token_id=processing_class.pad_token_id, max_length=cfg.max_length)
        super().__init__(model=model, args=args, data_collator=collator, processing_class=processing_class,
                         train_dataset=encode(train_dataset) if train_dataset is not None else None,
                         eval_dataset=encode(eval_dataset) if eval_dataset is not None else None, **kwargs)
        self._dpo_metrics: dict[str, list[float]] = defaultdict(list)

    def dpo_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mean loss, per-pair parts) of one collated batch (:func:`~hfx_plugins.dpo.logps.dpo_batch_loss`).

        ``inputs`` holds (2P, T) ``input_ids``, ``attention_mask`` and ``completion_mask`` (chosen rows, then
        rejected ones); the loss is a scalar, the parts (P,) tensors (trl 1.16's ``DPOTrainer._compute_loss``).

        Raises:
            HfxError: no ``ref_model`` and no LoRA adapter on ``model``; ``beta <= 0`` or an unknown ``loss_type``.
        """
        cfg = self.dpo_config
        return dpo_batch_loss(model, inputs, cfg.beta, cfg.loss_type, self.ref_model)

    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The mean DPO loss over the batch's pairs; records trl's ``rewards/*`` metrics for the next log.

        Args:
            inputs: (2P, T) ``input_ids``, ``attention_mask``, ``completion_mask`` of P pairs (:meth:`dpo_loss`).

        Returns:
            The scalar loss, or ``(loss, parts)`` with (P,) per-pair tensors when ``return_outputs``
            (``transformers.Trainer.compute_loss``'s contract).

        Raises:
            HfxError: what :meth:`dpo_loss` raises.
        """
        loss, parts = self.dpo_loss(model, inputs)
        prefix = "" if model.training else "eval_"
        c, r = parts["chosen_rewards"], parts["rejected_rewards"]
        for name, value in (("rewards/chosen", c.mean()), ("rewards/rejected", r.mean()),
                            ("rewards/accuracies", (c > r).float().mean()), ("rewards/margins", (c - r).mean())):
            self._dpo_metrics[prefix + name].append(float(value))
        return (loss, parts) if return_outputs else loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, torch.Tensor], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[torch.Tensor, None, None]:
        """The evaluation loss of one batch without gradients, as trl's ``DPOTrainer.prediction_step`` with
        ``prediction_loss_only``: no logits or labels are returned.

        Args:
            inputs: (2P, T) ``input_ids``, ``attention_mask``, ``completion_mask`` of P pairs.

        Returns:
            ``(loss, None, None)``, the loss a scalar tensor.
        """
        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Trainer's log plus the mean of each ``rewards/*`` metric since the last log (train or eval ones)."""
        evaluating = any(k.startswith("eval_") for k in logs)
        for key in [k for k in self._dpo_metrics if k.startswith("eval_") == evaluating]:
            values = self._dpo_metrics.pop(key)
            logs[key] = sum(values) / len(values)
        super().log(logs, start_time)
