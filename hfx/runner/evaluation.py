"""The evaluation step recipes share: held-out loss, accuracy and perplexity, and greedy answers.

A recipe's ``evaluate()`` is, for the transformers tasks (sequence classification, causal LM, seq2seq LM)::

    model = ctx.accelerator.unwrap_model(loop.model)
    metrics = task_metrics(model, eval_set, collate, task, batch_size=ctx.run.train.eval_batch_size)
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=24, seq2seq=task == "seq2seq-lm")
    metrics["exact_match"] = hfx.metrics.exact_match(answers, targets)

Every function puts the model in eval mode without gradients and gives it back in the mode it had.
The numbers themselves (perplexity, exact match) are :mod:`hfx.metrics`'; accuracy and exact match come back
as :class:`hfx.metrics.Estimate` (the same float, carrying n and its 95% interval for the run's table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from hfx.errors import HfxError
from hfx.metrics import perplexity, proportion

__all__ = ["LM_TASKS", "evaluating", "greedy_answers", "loss_metrics", "task_metrics"]

LM_TASKS = ("causal-lm", "seq2seq-lm")
"""Tasks whose loss is a mean next-token cross-entropy, so that exp(loss) is a perplexity."""

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (dropout off) and no gradients inside the block; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def loss_metrics(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                 loss_fn: LossFn | None = None) -> dict[str, float]:
    """Mean loss over ``batches`` and, for a classifier, accuracy.

    Args:
        model: A transformers-style model: ``model(**batch)`` returns ``.loss`` (and ``.logits``).
        batches: Collated batches; each tensor is moved to the model's device.
        loss_fn: ``loss_fn(model, batch) -> scalar`` used instead of ``model(**batch).loss`` (e.g. a recipe's
            own loss). Not used for classifiers, whose loss and logits come from one forward pass.

    Returns:
        ``loss``: the mean of the per-batch mean losses (as the training loss is logged; a smaller last batch
        counts as much as the others). ``accuracy``: share of argmax(logits) == labels, added when the logits
        are (B, C) with C > 1 and the labels integers (a single-output regression head gets none); an
        :class:`hfx.metrics.Estimate` (the same float, with n and its Wilson 95% interval).

    Raises:
        HfxError: there were no batches (an empty evaluation set).
    """
    total, n, correct, seen = 0.0, 0, 0, 0
    device = _device(model)
    with evaluating(model):
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            labels = batch.get("labels")
            classify = labels is not None and labels.ndim == 1 and not labels.is_floating_point()
            if classify or loss_fn is None:
                out = model(**batch)
                loss, logits = out.loss, getattr(out, "logits", None)
                if classify and logits is not None and logits.ndim == 2 and logits.shape[-1] > 1:  # (B, C)
                    correct += int((logits.argmax(-1) == labels).sum())
                    seen += labels.numel()
            else:
                loss = loss_fn(model, batch)
            total, n = total + float(loss), n + 1
    if not n:
        raise HfxError("the evaluation set is empty; give data with a non-empty eval split (data.eval_size)")
    metrics = {"loss": total / n}
    if seen:
        metrics["accuracy"] = proportion(correct / seen, seen)  # carries n and its Wilson 95% interval
    return metrics


def task_metrics(model: nn.Module, dataset: Any, collate: Callable[[list[Any]], dict[str, torch.Tensor]],
                 task: str, batch_size: int, loss_fn: LossFn | None = None) -> dict[str, float]:
    """:func:`loss_metrics` of ``dataset`` plus, for a language-modelling task, ``perplexity`` = exp(loss).

    Args:
        model: The unwrapped model.
        dataset: Tokenized examples (a ``datasets.Dataset`` or a list) that ``collate`` batches.
        collate: The recipe's collator (the same one training uses).
        task: ``sequence-classification``, ``causal-lm`` or ``seq2seq-lm`` (see :data:`LM_TASKS`).
        batch_size: Examples per evaluation batch.
        loss_fn: As in :func:`loss_metrics`; for the LM tasks it must be a mean next-token cross-entropy in
            nats per token, or the perplexity means nothing.

    Raises:
        HfxError: an empty evaluation set.
    """
    metrics = loss_metrics(model, DataLoader(dataset, batch_size=batch_size, collate_fn=collate), loss_fn)
    if task in LM_TASKS:
        metrics["perplexity"] = perplexity(metrics["loss"])
    return metrics


def greedy_answers(model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, *,
                   seq2seq: bool, batch_size: int = 16, max_length: int | None = None,
                   add_special_tokens: bool = True) -> list[str]:
    """Greedy (``do_sample=False``) generations for ``prompts``, decoded without special tokens and stripped.

    A decoder-only model continues each prompt from its last real token, so prompts are padded on the left
    and only the new tokens are decoded; an encoder-decoder's output is its answer alone (right padding).

    Args:
        model: A model with ``generate`` (transformers' ``GenerationMixin``).
        tokenizer: Its tokenizer; its ``padding_side`` is restored afterwards.
        prompts: The full input texts (N,), already formatted (e.g. by a chat template).
        max_new_tokens: Tokens generated per prompt at most.
        seq2seq: The model is an encoder-decoder.
        batch_size: Prompts per ``generate`` call.
        max_length: Inputs are cut to this many tokens (None: not cut).
        add_special_tokens: Let the tokenizer add its special tokens (False for prompts from a chat template,
            which already hold them).

    Returns:
        One answer per prompt (N,).

    Raises:
        HfxError: ``max_new_tokens`` < 1.
    """
    if max_new_tokens < 1:
        raise HfxError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    side = tokenizer.padding_side
    tokenizer.padding_side = "right" if seq2seq else "left"
    device = _device(model)
    answers: list[str] = []
    try:
        with evaluating(model):
            for start in range(0, len(prompts), batch_size):
                chunk = list(prompts[start:start + batch_size])
                enc = tokenizer(chunk, padding=True, truncation=max_length is not None, max_length=max_length,
                                return_tensors="pt", add_special_tokens=add_special_tokens).to(device)
                enc.pop("token_type_ids", None)
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)  # (B, T_in + T_new) or (B, T_new)
                new = out if seq2seq else out[:, enc["input_ids"].shape[1]:]  # (B, T_new)
                answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return answers
