"""Shared helpers of the lora tests: the same tiny model with hfx's and with peft's adapters, and fixed batches.

Every expected number in these tests comes from peft (the installed version) run on the same tiny model,
the same seed and the same batches; nothing is downloaded. The twin is :func:`hfx.testing.reference_twin`
(peft's default target modules unless a test names others), the adapter helpers those of ``hfx validate``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hfx.data.collate import IGNORE_INDEX
from hfx.parity import logits
from hfx.testing import reference_twin
from hfx_plugins.lora.checks import lora_tensors, randomize

__all__ = ["PEFT_TASK", "TEXTS", "batch", "logits", "lora_tensors", "pair", "randomize"]

# the task_type peft writes for each tiny family's default model (its PeftModel subclass)
PEFT_TASK = {"llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "bert": "SEQ_CLS", "t5": "SEQ_2_SEQ_LM"}
TEXTS = ["the function returns a new list of values", "a class may define its own methods",
         "each object has an identity a type and a value", "the value of an object can change"]


def pair(family: str, seed: int = 0, **fields: Any) -> tuple[nn.Module, nn.Module, Any]:
    """``(hfx model, peft model, tokenizer)``: one tiny model, adapted by each library from the same RNG state."""
    return reference_twin(family, "lora", "LoraConfig", seed, **fields)


def batch(tok: Any, family: str, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    """A padded batch for ``family`` with labels (causal LM: the inputs; T5: a short target; BERT: classes)."""
    enc = dict(tok(texts, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids", None)
    if family == "bert":
        enc["labels"] = torch.arange(len(texts)) % 2
    elif family == "t5":
        target = tok([t.split()[-1] for t in texts], padding=True, return_tensors="pt")["input_ids"]
        enc["labels"] = target.masked_fill(target == tok.pad_token_id, IGNORE_INDEX)
    else:
        enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE_INDEX)
    return enc
