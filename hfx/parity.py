"""Side-by-side measurements that several plugins' ``checks()`` make against peft on tiny models.

Each function takes the hfx model and/or its peft twin (built by the plugin's own ``pair``: the same tiny base,
the same RNG state) and returns one number, the largest difference, for :class:`hfx.validate.Check`:
eval-mode logits, the two libraries' save/load round trips, and the losses of AdamW trained side by side on
one fixed batch. The generation check that only prefix_tuning and prompt_tuning make is
``hfx_plugins.prompt_learning.generation_mismatch``.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import torch
from torch import nn

from hfx.data.collate import IGNORE_INDEX

__all__ = ["TEXTS", "batch", "hfx_to_peft_gap", "logits", "peft_to_hfx_gap", "train_losses", "training_gap",
           "with_labels"]

TEXTS = ["the function returns a new list of values", "a class may define its own methods"]


def batch(tok: Any, family: str, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    """The padded batch of ``texts``; T5 also gets ``decoder_input_ids``, the first 5 input ids (B, 5)."""
    enc = dict(tok(texts, padding=True, return_tensors="pt"))
    if family == "t5":
        enc["decoder_input_ids"] = enc["input_ids"][:, :5]
    return enc


def logits(model: nn.Module, inputs: dict[str, torch.Tensor], start: int = 0) -> torch.Tensor:
    """Eval-mode logits (B, T - start, V) from position ``start`` on, without gradients."""
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renames, read by peft
        return model(**inputs).logits[:, start:]


def hfx_to_peft_gap(ours: nn.Module, fresh_base: nn.Module, inputs: dict[str, torch.Tensor],
                    start: int = 0) -> float:
    """Save ``ours`` with ``hfx.save``, load it onto ``fresh_base`` with ``PeftModel.from_pretrained``; largest
    logit difference (peft's from position ``start``). Any warning but FutureWarning is an error.

    ``inputs`` holds (B, T) ``input_ids``/``attention_mask`` (:func:`batch`); the logits compared are (B, T, V),
    peft's (B, start + T, V) cut at ``start`` (its virtual tokens).

    Raises:
        Warning: any warning but FutureWarning that peft's load emits, raised as an exception by
            ``warnings.simplefilter("error")`` (so the check fails).
    """
    from peft import PeftModel

    import hfx

    with tempfile.TemporaryDirectory() as tmp:
        hfx.save(ours, tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", category=FutureWarning)
            theirs = PeftModel.from_pretrained(fresh_base, tmp)
        return (logits(ours, inputs) - logits(theirs, inputs, start)).abs().max().item()


def peft_to_hfx_gap(theirs: nn.Module, fresh_base: nn.Module, inputs: dict[str, torch.Tensor],
                    start: int = 0) -> float:
    """Save the peft model ``theirs`` with ``save_pretrained``, load it onto ``fresh_base`` with ``hfx.load``;
    largest logit difference (peft's from position ``start``).

    ``inputs`` holds (B, T) ``input_ids``/``attention_mask`` (:func:`batch`); the logits compared are (B, T, V),
    peft's (B, start + T, V) cut at ``start``. Raises what ``hfx.load`` raises on a file it cannot read.
    """
    import hfx

    with tempfile.TemporaryDirectory() as tmp:
        theirs.save_pretrained(tmp)
        ours = hfx.load(fresh_base, tmp)
        return (logits(ours, inputs) - logits(theirs, inputs, start)).abs().max().item()


def with_labels(inputs: dict[str, torch.Tensor], family: str, pad_token_id: int) -> dict[str, torch.Tensor]:
    """``inputs`` with language-model labels: the input ids (T5: the decoder ids, moved to ``labels``), pads ignored.

    ``labels`` is (B, T) like ``input_ids`` (T5: (B, 5) like ``decoder_input_ids``), ``pad_token_id`` replaced by
    -100, the index transformers' loss ignores.
    """
    x = dict(inputs)
    x["labels"] = (x.pop("decoder_input_ids") if family == "t5" else x["input_ids"]).clone()
    x["labels"][x["labels"] == pad_token_id] = IGNORE_INDEX
    return x


def train_losses(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int = 20, lr: float = 1e-2,
                 seed: int | None = None) -> list[float]:
    """The losses of ``steps`` AdamW steps (torch defaults but ``lr``) of ``model``'s trainable parameters on
    one fixed batch ``inputs`` (labels included), in train mode; ``seed`` seeds torch's RNG first (dropout)."""
    model.train()
    if seed is not None:
        torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for _ in range(steps):
            loss = model(**inputs).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    return losses


def training_gap(models: tuple[nn.Module, ...], inputs: dict[str, torch.Tensor], steps: int = 20,
                 lr: float = 1e-2) -> float:
    """Largest relative difference ``|a - b| / |b|`` of the losses of two models trained side by side by
    :func:`train_losses` (hfx's model first, the reference second).

    ``inputs``: one fixed batch with (B, T) ``input_ids``, ``attention_mask`` and ``labels`` (:func:`with_labels`).
    """
    ours, theirs = (train_losses(m, inputs, steps, lr) for m in models)
    return max(abs(a - b) / abs(b) for a, b in zip(ours, theirs, strict=True))
