"""Instruction tuning helpers for the recipe: prompts, prompt-masked labels, the response-only loss.

Greedy answers and exact match are the core's (:func:`hfx.runner.evaluation.greedy_answers`,
:func:`hfx.metrics.exact_match`).

A training example is ``prompt + response + eos`` with the prompt's labels set to -100, so the loss is
the response's alone (the usual supervised fine-tuning recipe). The prompt is the tokenizer's chat
template when it has one (SmolLM2-Instruct's ``<|im_start|>user ...``), else ``"Instruction: ...\\nAnswer: "``.

:func:`completion_loss` computes that loss with the output layer applied to the labelled positions only:
with ~45-token prompts and ~4-token answers, the (B, T, vocab) logits of transformers' loss are >90%
wasted work and memory (49,152-word vocabulary on smollm2: 480 MB of logits for 32 x 77 tokens).
"""

from __future__ import annotations

from typing import Any

import datasets
import torch
import torch.nn.functional as F
from torch import nn

from hfx.data.collate import IGNORE_INDEX

__all__ = ["completion_loss", "prompt_text", "tokenize_instructions"]


def prompt_text(tokenizer: Any, instruction: str) -> str:
    """The text the model sees before its answer."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": instruction}], add_generation_prompt=True,
                                             tokenize=False)
    return f"Instruction: {instruction}\nAnswer: "


def tokenize_instructions(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> datasets.Dataset:
    """Columns text (instruction) and target (response) -> input_ids, attention_mask, labels (prompt masked)."""
    eos = tokenizer.eos_token or ""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for instruction, response in zip(batch["text"], batch["target"], strict=True):
            prompt = tokenizer(prompt_text(tokenizer, instruction), add_special_tokens=False)["input_ids"]
            reply = tokenizer(str(response) + eos, add_special_tokens=False)["input_ids"]
            ids = (prompt + reply)[:max_length]
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(([IGNORE_INDEX] * len(prompt) + reply)[:max_length])
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Tokenizing (instructions)")


def completion_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens, as ``model(**batch).loss``, without full logits.

    Falls back to the model's own loss where its head does more than a linear map (e.g. logit soft-capping).
    ``batch`` holds (B, T) ``input_ids``, ``attention_mask`` and ``labels`` (-100: not scored); returns ().
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if head is None or body is None or getattr(model.config, "final_logit_softcapping", None):
        return model(**batch).loss
    labels = batch["labels"]  # (B, T)
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
    targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
    keep = targets != IGNORE_INDEX  # (B, T-1)
    logits = head(hidden[:, :-1][keep])  # (N, vocab), N labelled tokens
    return F.cross_entropy(logits.float(), targets[keep])
