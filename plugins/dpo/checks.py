"""``hfx validate plugin=dpo``: hfx's DPO against trl 1.16's ``DPOTrainer`` (the installed trl), in seconds.

Two kinds of rows, for each of ``sigmoid``, ``hinge`` and ``ipo``:

- **loss formula**: trl's ``DPOTrainer._compute_loss`` (``trl/trainer/dpo_trainer.py``) is called unbound on a
  stand-in trainer (the attributes it reads; ``precompute_ref_logps=True`` so the reference log-probs come in
  the batch) with a stand-in model whose per-token log-probs are given, one pair per call (trl returns the
  batch mean), against :func:`hfx_plugins.dpo.losses.dpo_loss` on the same sums and lengths;
- **one update**: the same tiny random Llama with the same LoRA initialisation (``hfx.testing.reference_twin``:
  hfx's lora and peft's), trained one step by trl's ``DPOTrainer`` (reference: the fresh adapter's base) and by
  ``hfx.DPOTrainer`` (reference: the adapter disabled) with plain SGD (so the update is the gradient itself,
  not Adam's sign-like first step), then the per-pair losses of the updated models (trl's ``compute_loss`` on
  each pair alone) and the LoRA weights. Each check returns the largest absolute difference.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import torch

from hfx.validate import Check
from hfx_plugins.dpo.losses import dpo_loss

__all__ = ["PAIRS", "TOL", "checks", "formula_diff", "one_update_diffs", "trl_pair_loss"]

TOL = 1e-5
PAIRS = [{"prompt": "the function returns", "chosen": " a value", "rejected": " the list of names"},
         {"prompt": "a class has", "chosen": " methods and data", "rejected": " none"},
         {"prompt": "import the module", "chosen": " first", "rejected": " to use the name in the file"},
         {"prompt": "print the list", "chosen": " of values", "rejected": " again"}]


class _LogProbs(torch.nn.Module):
    """A model whose output holds fixed per-token log-probs (2, T-1): the chosen row, then the rejected row."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.log_probs = log_probs

    def forward(self, **inputs: Any) -> SimpleNamespace:
        zeros = torch.zeros_like(self.log_probs)
        return SimpleNamespace(log_probs=self.log_probs, entropy=zeros, mean_logits=zeros,
                               is_top1=zeros.bool(), aux_loss=None)


def trl_pair_loss(log_probs: torch.Tensor, completion_mask: torch.Tensor, ref_chosen: float, ref_rejected: float,
                  beta: float, loss_type: str) -> torch.Tensor:
    """trl's ``DPOTrainer._compute_loss`` on one pair: per-token log-probs (2, T-1), completion mask (2, T)."""
    from trl import DPOTrainer

    identity = SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x, device=torch.device("cpu"))
    model = _LogProbs(log_probs * completion_mask[:, 1:])  # trl's log_probs are 0 where the label is -100
    model.train()
    stand_in = SimpleNamespace(
        model=model, accelerator=identity, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        ref_model=None, f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta,
        use_weighting=False, label_smoothing=0.0, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1, args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    inputs = {"input_ids": torch.zeros_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
              "completion_mask": completion_mask, "ref_chosen_logps": torch.tensor([ref_chosen]),
              "ref_rejected_logps": torch.tensor([ref_rejected])}
    return DPOTrainer._compute_loss(stand_in, model, inputs, return_outputs=False)


def formula_diff(loss_type: str, beta: float = 0.1, pairs: int = 12) -> float:
    """Largest |hfx - trl| per-pair loss on random log-probs and completions of 1 to 9 tokens."""
    g = torch.Generator().manual_seed(0)
    logps, ref, lengths, theirs = [], [], [], []
    for _ in range(pairs):
        per_token = -torch.rand(2, 11, generator=g) * 4  # (2, T-1)
        mask = torch.zeros(2, 12, dtype=torch.long)  # (2, T): prompt of 2 tokens, completion, then padding
        for row in range(2):
            mask[row, 2:2 + int(torch.randint(1, 10, (1,), generator=g))] = 1
        ref_pair = (-torch.rand(2, generator=g) * 20).tolist()
        theirs.append(trl_pair_loss(per_token, mask, ref_pair[0], ref_pair[1], beta, loss_type))
        logps.append((per_token * mask[:, 1:]).sum(1))  # (2,)
        ref.append(torch.tensor(ref_pair))
        lengths.append(mask.sum(1).float())
    lp, rf, n = torch.stack(logps), torch.stack(ref), torch.stack(lengths)  # (P, 2) each
    ours, _, _ = dpo_loss(lp[:, 0], lp[:, 1], rf[:, 0], rf[:, 1], beta, loss_type, chosen_lengths=n[:, 0],
                          rejected_lengths=n[:, 1])
    return (ours - torch.stack(theirs)).abs().max().item()


@functools.cache
def one_update_diffs(loss_type: str, beta: float = 0.5) -> dict[str, float]:
    """``{"losses", "weights", "moved"}``: |hfx - trl| of the per-pair losses and LoRA weights after one SGD step
    (and how far the LoRA weights moved, so a step that changed nothing cannot pass unnoticed)."""
    import datasets
    from transformers import PrinterCallback, TrainingArguments
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer as TrlDPOTrainer

    from hfx.testing import reference_twin
    from hfx_plugins.dpo.config import DPOConfig
    from hfx_plugins.dpo.data import collate_pairs
    from hfx_plugins.dpo.logps import dpo_batch_loss
    from hfx_plugins.dpo.trainer import DPOTrainer

    ours, theirs, tok = reference_twin("llama", "lora", "LoraConfig", dropout=0.0,
                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    common = dict(use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=len(PAIRS), max_steps=1,
                  optim="sgd", learning_rate=2.0, lr_scheduler_type="constant", save_strategy="no", seed=0,
                  disable_tqdm=True, logging_strategy="no")
    were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # trl's dataset preparation, 4 rows
    try:
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore")
            trl = TrlDPOTrainer(theirs, args=TrlDPOConfig(output_dir=tmp, beta=beta, loss_type=[loss_type], **common),
                                train_dataset=datasets.Dataset.from_list(PAIRS), processing_class=tok)
            hfx = DPOTrainer(ours, args=TrainingArguments(output_dir=tmp, **common), train_dataset=PAIRS,
                             processing_class=tok, dpo_config=DPOConfig(beta=beta, loss_type=loss_type))
            for trainer in (trl, hfx):
                trainer.remove_callback(PrinterCallback)  # disable_tqdm=True prints every log dict otherwise
                trainer.train()
    finally:
        if were_on:
            datasets.enable_progress_bars()
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        batch = collate_pairs(list(hfx.train_dataset), tok.pad_token_id)
        _, parts = dpo_batch_loss(ours, batch, beta, loss_type)
        trl_losses = torch.stack([trl.compute_loss(theirs, trl.data_collator([trl.train_dataset[i]]))
                                  for i in range(len(PAIRS))])
    mine = {k.replace(".default", ""): v for k, v in ours.state_dict().items() if "lora_" in k}
    peft = {k.replace("base_model.model.", "").replace(".default", ""): v for k, v in theirs.state_dict().items()
            if "lora_" in k and ".ref." not in k}  # trl adds a frozen "ref" copy of the initial adapter
    if set(mine) != set(peft):
        raise RuntimeError(f"LoRA tensors differ by name: {sorted(set(mine) ^ set(peft))[:4]}")
    return {"losses": (parts["losses"] - trl_losses).abs().max().item(),
            "weights": max((mine[k] - peft[k]).abs().max().item() for k in mine),
            "moved": max(mine[k].abs().max().item() for k in mine if "lora_B" in k)}  # B starts at zero


def _update_diff(loss_type: str, key: str) -> float:
    diffs = one_update_diffs(loss_type)
    if diffs["moved"] < 1e-4:
        raise RuntimeError(f"the update moved the LoRA weights by only {diffs['moved']:.2e}: nothing was compared")
    return diffs[key]


def checks() -> list[Check]:
    """``hfx validate plugin=dpo``: for sigmoid, hinge and ipo, the per-pair loss formula, the losses and LoRA
    weights after one update vs trl 1.16's ``DPOTrainer``.
    """
    out = []
    for loss_type in ("sigmoid", "hinge", "ipo"):
        out.append(Check(f"{loss_type} per-pair loss vs trl DPOTrainer._compute_loss", "trl", TOL,
                         functools.partial(formula_diff, loss_type)))
        out.append(Check(f"{loss_type}: per-pair losses after one update vs trl DPOTrainer (tiny Llama + LoRA)",
                         "trl", TOL, functools.partial(_update_diff, loss_type, "losses")))
        out.append(Check(f"{loss_type}: LoRA weights after one update vs trl DPOTrainer", "trl", TOL,
                         functools.partial(_update_diff, loss_type, "weights")))
    return out
