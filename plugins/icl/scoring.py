"""Log-likelihood scoring of continuations as lm-evaluation-harness's HF backend does it (lm-eval 0.4.13).

    lls = loglikelihood(model, tok, [("Review: awful.\\nLabel:", " foo"), ("Review: awful.\\nLabel:", " bar")])
    res = score_choices(model, tok, contexts, [["foo", "bar"]] * len(contexts), golds)  # res.acc, res.acc_norm

- Tokenization (``TemplateLM._encode_pair``): trailing spaces of the context move into the continuation;
  the whole string ``context + continuation`` is encoded and split after ``len(encode(context))`` tokens, so
  the continuation's tokens are those of the whole text (a word merged across the boundary stays merged).
  ``encode`` is the tokenizer's default (its own special tokens, e.g. Llama's BOS), as lm-eval's ``tok_encode``.
- Score: the sum over continuation tokens of log softmax(logits) at the token (float32), from one forward
  pass of ``(context + continuation)[:-1]``; ``is_greedy`` says whether every continuation token is the argmax.
- Multiple choice (``api/task.py``, ``api/metrics.py``): ``acc`` = the gold choice has the largest summed
  log-likelihood; ``acc_norm`` = the largest log-likelihood divided by the choice's length in **characters**
  (``len(choice)``, without the target delimiter). Ties go to the first choice (``np.argmax``).

Departures from lm-eval: requests are batched by similar length with right padding and an attention mask
(lm-eval pads right too, without a mask; the real tokens' logits are the same up to float rounding), and an
over-long request is an error instead of being cut from the left (``prompts.fit_prompt`` drops examples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hfx.errors import HfxError

__all__ = ["ChoiceResult", "context_length", "encode_pair", "loglikelihood", "score_choices"]


def context_length(model: Any, max_length: int = 0) -> int:
    """Token budget: ``max_length`` if set, else the model config's ``max_position_embeddings`` (or n_positions)."""
    if max_length:
        return max_length
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048)


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair`` for causal models: (context token ids, continuation token ids)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:  # lm-eval conditions an empty context on the BOS (else EOS) token
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def loglikelihood(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 8,
    max_length: int = 0,
) -> list[tuple[float, bool]]:
    """Summed log-probability of each continuation given its context: [(log p, is_greedy)] in request order.

    Args:
        model: A causal LM returning ``logits`` (B, T, V).
        tokenizer: Its tokenizer.
        requests: ``(context, continuation)`` strings, e.g. ``("...Label:", " foo")``.
        batch_size: Requests per forward pass.
        max_length: Token limit of a request; 0: the model's (see :func:`context_length`).

    Raises:
        HfxError: a continuation with no tokens, or a request longer than the limit.
    """
    limit = context_length(model, max_length)
    encoded = [encode_pair(tokenizer, c, x) for c, x in requests]
    for (ctx, cont), (c, x) in zip(encoded, requests, strict=True):
        if not cont:
            raise HfxError(f"the continuation {x!r} has no tokens after context {c[-40:]!r}")
        if len(ctx) + len(cont) - 1 > limit:
            raise HfxError(f"a request is {len(ctx) + len(cont) - 1} tokens, more than the model's {limit}; "
                           "build prompts with icl.fit_prompt (drops examples, keeps the query)")
    # Requests with the same input tokens (one-token continuations of one context: the choices of a
    # multiple-choice question) share one forward pass, as lm-eval's one-token continuation cache does.
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, cont) in enumerate(encoded):
        groups.setdefault(tuple((ctx + cont)[:-1]), []).append(i)
    keys = sorted(groups, key=len, reverse=True)  # longest first: similar lengths share a batch
    device = next(model.parameters()).device
    out: list[tuple[float, bool]] = [(0.0, False)] * len(encoded)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        width = len(chunk[0])
        ids = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T) right-padded
        mask = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)], mask[row, :len(seq)] = torch.tensor(seq), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
        for row, key in enumerate(chunk):
            for i in groups[key]:
                ctx, cont = encoded[i]
                first = len(ctx) - 1  # logits at position t predict token t + 1
                rows = logits[row, first:first + len(cont)].float().log_softmax(-1)  # (C, V)
                target = torch.tensor(cont, device=rows.device)  # (C,)
                out[i] = (float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all()))
    return out


@dataclass
class ChoiceResult:
    """Multiple-choice scores of N documents."""

    lls: list[list[float]]
    """Summed log-likelihood of each choice, per document (N lists)."""
    pred: list[int] = field(default_factory=list)
    """argmax of ``lls`` per document (``acc``'s prediction)."""
    pred_norm: list[int] = field(default_factory=list)
    """argmax of ``lls / len(choice)`` per document (``acc_norm``'s prediction)."""
    acc: float = 0.0
    """Share of documents whose gold choice has the largest log-likelihood."""
    acc_norm: float = 0.0
    """The same with each log-likelihood divided by its choice's length in characters."""


def score_choices(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    choices: Sequence[Sequence[str]],
    golds: Sequence[int],
    target_delimiter: str = " ",
    batch_size: int = 8,
    max_length: int = 0,
) -> ChoiceResult:
    """Score each document's choices as continuations ``target_delimiter + choice`` of its context.

    Args:
        contexts: Prompts (N,), e.g. from :func:`hfx_plugins.icl.prompts.build_prompt`.
        choices: The choice strings of each document (N lists), without the delimiter.
        golds: Index of the right choice per document (N,).

    Raises:
        HfxError: lengths differ, or a gold index is out of range.
    """
    if not len(contexts) == len(choices) == len(golds):
        raise HfxError(f"score_choices got {len(contexts)} contexts, {len(choices)} choice lists, {len(golds)} golds")
    if any(not 0 <= g < len(c) for g, c in zip(golds, choices, strict=True)):
        raise HfxError("a gold index is outside its document's choices")
    requests = [(ctx, f"{target_delimiter}{c}") for ctx, cs in zip(contexts, choices, strict=True) for c in cs]
    flat = [ll for ll, _ in loglikelihood(model, tokenizer, requests, batch_size, max_length)]
    res, pos = ChoiceResult(lls=[]), 0
    for cs in choices:
        res.lls.append(flat[pos:pos + len(cs)])
        pos += len(cs)
    for lls, cs in zip(res.lls, choices, strict=True):
        res.pred.append(int(np.argmax(lls)))
        res.pred_norm.append(int(np.argmax(np.array(lls) / np.array([float(len(c)) for c in cs]))))
    n = max(len(golds), 1)
    res.acc = sum(p == g for p, g in zip(res.pred, golds, strict=True)) / n
    res.acc_norm = sum(p == g for p, g in zip(res.pred_norm, golds, strict=True)) / n
    return res
