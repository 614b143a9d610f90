"""Instruction tuning helpers for the recipe: prompts, prompt-masked labels, greedy answers, exact match.

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

__all__ = ["answer", "completion_loss", "exact_match", "prompt_text", "tokenize_instructions"]


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


@torch.no_grad()
def answer(model: nn.Module, tokenizer: Any, instructions: list[str], max_new_tokens: int,
           batch_size: int = 16, seq2seq: bool = False) -> list[str]:
    """Greedy answers to ``instructions`` (decoder: after the chat prompt, padded on the left)."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "right" if seq2seq else "left"  # a decoder continues from the last real token
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(instructions), batch_size):
            chunk = instructions[start:start + batch_size]
            texts = chunk if seq2seq else [prompt_text(tokenizer, q) for q in chunk]
            enc = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=seq2seq).to(device)
            enc.pop("token_type_ids", None)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # (B, T_in + T_new) or (B, T_new)
            new = out if seq2seq else out[:, enc["input_ids"].shape[1]:]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def _norm(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.strip().rstrip(".").strip().lower()


def exact_match(answers: list[str], targets: list[str]) -> float:
    """Share of answers whose first line equals the target (case and a final period ignored)."""
    hits = sum(_norm(a) == _norm(str(t)) for a, t in zip(answers, targets, strict=True))
    return hits / max(len(targets), 1)
