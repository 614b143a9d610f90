"""Shared helpers of the lora tests: the same tiny model with hfx's and with peft's adapters, and fixed batches.

Every expected number in these tests comes from peft (the installed version) run on the same tiny model,
the same seed and the same batches; nothing is downloaded.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import hfx
from hfx.testing import tiny_model

PEFT_TASK = {"llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "bert": "SEQ_CLS", "t5": "SEQ_2_SEQ_LM"}
TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn", "c_proj"], "bert": ["query", "value"], "t5": ["q", "v"]}
TEXTS = ["the function returns a new list of values", "a class may define its own methods",
         "each object has an identity a type and a value", "the value of an object can change"]


def pair(family: str, seed: int = 0, **fields: Any) -> tuple[nn.Module, nn.Module, Any]:
    """``(hfx model, peft model, tokenizer)``: one tiny model, adapted by each library from the same RNG state."""
    from peft import LoraConfig, get_peft_model

    base, tok = tiny_model(family)
    twin = copy.deepcopy(base)
    fields.setdefault("target_modules", TARGETS[family])
    torch.manual_seed(seed)
    ours = hfx.apply(base, "lora", **fields)
    torch.manual_seed(seed)
    theirs = get_peft_model(twin, LoraConfig(task_type=PEFT_TASK[family], **fields))
    return ours, theirs, tok


def batch(tok: Any, family: str, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    """A padded batch for ``family`` with labels (causal LM: the inputs; T5: a short target; BERT: classes)."""
    enc = dict(tok(texts, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids", None)
    if family == "bert":
        enc["labels"] = torch.arange(len(texts)) % 2
    elif family == "t5":
        target = tok([t.split()[-1] for t in texts], padding=True, return_tensors="pt")["input_ids"]
        enc["labels"] = target.masked_fill(target == tok.pad_token_id, -100)
    else:
        enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc


def lora_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors by hfx's key (peft's ``base_model.model.`` prefix removed)."""
    return {k.removeprefix("base_model.model."): v for k, v in model.state_dict().items()
            if "lora_" in k or "modules_to_save" in k}


@torch.no_grad()
def randomize(*models: nn.Module, seed: int = 1, scale: float = 0.1) -> None:
    """Give the adapters of several models the same random values (B is zero after init: outputs would not differ)."""
    tensors = [lora_tensors(m) for m in models]
    g = torch.Generator().manual_seed(seed)
    for key in sorted(tensors[0]):
        noise = torch.randn(tensors[0][key].shape, generator=g) * scale
        for t in tensors:
            t[key].add_(noise)


def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits
