"""Turn rows (canonical columns text / text_pair / label / target) into model batches.

``tokenize_for_task`` maps a Dataset to token ids once (no padding); ``collator_for_task`` pads each
batch to its longest example (dynamic padding) and pads labels with -100, the index PyTorch's
cross-entropy ignores. Both follow the Hugging Face conventions, so their output feeds
``transformers.Trainer`` or a plain loop alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from hfx.errors import HfxError, did_you_mean

if TYPE_CHECKING:
    import datasets

__all__ = ["IGNORE_INDEX", "TASKS", "collator_for_task", "pad_rows", "tokenize_for_task"]

TASKS = ("sequence-classification", "causal-lm", "seq2seq-lm", "masked-lm")
"""Tasks the tokenizer and collator functions know."""
IGNORE_INDEX = -100
"""Label value that the loss ignores (padding, and prompt tokens where a recipe masks them): the default
``ignore_index`` of PyTorch's ``cross_entropy`` and the label pad of transformers' collators. The one
definition in hfx; everything else imports this name (light: this module imports only torch at load)."""

_NEEDS = {
    "sequence-classification": ("text", "label"),
    "causal-lm": ("text",),
    "seq2seq-lm": ("text", "target"),
    "masked-lm": ("text",),
}
_OPTION = {"text": "text_column", "label": "label_column", "target": "target_column"}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise HfxError(f"unknown task '{task}'{did_you_mean(task, TASKS)}; tasks: {', '.join(TASKS)}")


def tokenize_for_task(ds: datasets.Dataset, tokenizer: Any, task: str, max_length: int) -> datasets.Dataset:
    """Tokenize ``ds`` for ``task``, truncating to ``max_length`` tokens; other columns are dropped.

    - sequence-classification: text [+ text_pair] -> input_ids, attention_mask (token_type_ids), labels
    - causal-lm: text -> input_ids with eos appended, attention_mask, labels = input_ids
    - seq2seq-lm: text -> input_ids, attention_mask; target -> labels
    - masked-lm: text -> input_ids, attention_mask, special_tokens_mask (masking happens in the collator)

    Args:
        ds: Examples with the canonical columns (``text``, ``text_pair``, ``label``, ``target``).
        tokenizer: A transformers tokenizer.
        task: One of :data:`TASKS`.
        max_length: Longest tokenized input, in tokens.

    Returns:
        The tokenized data set (variable-length rows; the collator pads them).

    Raises:
        HfxError: an unknown task, or a column the task needs is missing (naming the data.* option to set).
    """
    _check_task(task)
    for col in _NEEDS[task]:
        if col not in ds.column_names:
            raise HfxError(
                f"task {task} needs a '{col}' column; the data has {', '.join(ds.column_names)}; "
                f"set data.{_OPTION[col]}=<column>"
            )
    eos = getattr(tokenizer, "eos_token_id", None)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = batch["text"]
        if task == "sequence-classification":
            enc = tokenizer(texts, batch.get("text_pair"), truncation=True, max_length=max_length)
            enc["labels"] = batch["label"]
        elif task == "causal-lm":
            # One slot is kept for eos, so the model learns where a text ends.
            limit = max_length - 1 if eos is not None else max_length
            enc = tokenizer(texts, truncation=True, max_length=limit)
            if eos is not None:
                for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
                    if not ids or ids[-1] != eos:
                        ids.append(eos)
                        mask.append(1)
            enc["labels"] = [list(ids) for ids in enc["input_ids"]]  # shifted inside the model
        elif task == "seq2seq-lm":
            enc = tokenizer(texts, text_target=batch["target"], truncation=True, max_length=max_length)
        else:  # masked-lm
            enc = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        return dict(enc)

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing ({task})")


def collator_for_task(
    tokenizer: Any, task: str, seed: int = 0, model: Any = None
) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Return a collator padding a list of tokenized examples into a batch of (B, T) tensors.

    Inputs are padded with the pad token on ``tokenizer.padding_side``, labels with IGNORE_INDEX (-100). For
    masked-lm, 15% of the tokens are chosen from a generator seeded with ``seed`` (80% of them become
    [MASK], 10% a random token, 10% stay); labels are IGNORE_INDEX elsewhere. For seq2seq-lm, ``model``
    (optional) lets the collator build ``decoder_input_ids``. A tokenizer without a pad token (GPT-2,
    Llama) gets its eos token as pad token; that is safe because padded labels are IGNORE_INDEX and the
    attention mask marks padding by position, not by token id.

    Args:
        tokenizer: The tokenizer used by :func:`tokenize_for_task`.
        task: One of :data:`TASKS`.
        seed: Seeds the masked-lm masking generator.
        model: The seq2seq model, for ``decoder_input_ids`` (optional).

    Returns:
        ``collate(examples) -> {"input_ids": (B, T), "attention_mask": (B, T), "labels": (B, T) or (B,), ...}``.

    Raises:
        HfxError: an unknown task, a tokenizer with neither a pad nor an eos token, or masked-lm with a
            tokenizer that has no mask token.
    """
    from transformers import DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithPadding

    _check_task(task)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise HfxError(
                "the tokenizer has neither a pad token nor an eos token; set tokenizer.pad_token first"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if task == "sequence-classification":
        return DataCollatorWithPadding(tokenizer)  # labels: (B,)
    if task in ("causal-lm", "seq2seq-lm"):
        # Pads input_ids/attention_mask to the longest input and labels (separately) with IGNORE_INDEX.
        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE_INDEX)
    if tokenizer.mask_token is None:
        raise HfxError("task masked-lm needs a tokenizer with a mask token (a BERT-style model)")
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15, seed=seed)
    if collator.generator is None:
        # transformers < 5.19 tests `if self.seed` and so draws seed=0's masks from the global generator; a
        # generator of our own is kept by those versions and replaced by an identical one by later versions.
        collator.generator = torch.Generator().manual_seed(seed)
    return collator


def pad_rows(rows: Sequence[Sequence[int]], value: int, side: str = "right",
             width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad lists of ids to one (B, T) long tensor, and the (B, T) mask of what is real.

    The one padding routine of hfx's own batches (a tokenizer's ``pad`` does the same for tokenized dicts):
    ``side="right"`` puts ``value`` after each row (encoders, labels), ``"left"`` before it (decoder prompts,
    so every row ends where generation starts).

    Args:
        rows: B lists of token ids (or labels).
        value: What padded positions hold (the pad id; :data:`IGNORE_INDEX` for labels).
        side: "right" or "left".
        width: T, at least the longest row; default the longest row.

    Returns:
        ``(padded, mask)``: long tensors (B, T); ``mask`` is 1 at the rows' own entries, 0 at padding.

    Raises:
        HfxError: ``side`` is neither "right" nor "left", no rows, or a row longer than ``width``.
    """
    if side not in ("right", "left"):
        raise HfxError(f"padding side must be 'right' or 'left', got {side!r}")
    if not rows:
        raise HfxError("nothing to pad: the batch has no rows")
    longest = max(len(r) for r in rows)
    width = longest if width is None else width
    if longest > width:
        raise HfxError(f"a row of {longest} entries does not fit a padded width of {width}")
    padded = torch.full((len(rows), width), value, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        padded[i, span] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return padded, mask
