"""Log-likelihood scoring of continuations as lm-evaluation-harness's HF backend does it (lm-eval 0.4.13).

    lls = loglikelihood(model, tok, [("Review: awful.\\nLabel:", " foo"), ("Review: awful.\\nLabel:", " bar")])
    res = score_choices(model, tok, contexts, [["foo", "bar"]] * len(contexts), golds)  # res.acc, res.acc_norm

The one place hfx splits a (context, continuation) pair into tokens and scores it: the icl plugin's prompts
and the prompt-learning recipes' label words both go through it. Each rule is lm-eval's (file and function
named; ``lm_eval/`` of the 0.4.13 wheel):

- Tokenization (``api/model.py`` ``TemplateLM._encode_pair``): trailing spaces of the context move into the
  continuation; the whole string ``context + continuation`` is encoded and split after
  ``len(encode(context))`` tokens, so a word merged across the boundary stays merged. ``encode`` is the
  tokenizer's default (its own special tokens, e.g. Llama's BOS), except that a text which already starts
  with the prefix token's text gets no second one (``models/huggingface.py`` ``HFLM.tok_encode``).
- Empty context (``api/model.py`` ``TemplateLM.loglikelihood``): the context is the prefix token (BOS, else
  EOS: ``HFLM.prefix_token_id``) and the continuation is encoded without special tokens; if the continuation
  itself starts with that token, its first token is the context instead.
- Score (``models/huggingface.py`` ``HFLM._loglikelihood_tokens``): the sum over continuation tokens of
  log softmax(logits) at the token (float32), from one forward pass of ``(context + continuation)[:-1]``;
  ``is_greedy`` says whether every continuation token is the argmax. A request longer than the model's
  ``max_length`` + 1 tokens is cut from the left (the input keeps its last ``max_length`` tokens).
- Multiple choice (``api/task.py``, ``api/metrics.py``): ``acc`` = the gold choice has the largest summed
  log-likelihood; ``acc_norm`` = the largest log-likelihood divided by the choice's length in **characters**
  (``len(choice)``, without the target delimiter). Ties go to the first choice (``np.argmax``).

Departure from lm-eval: requests are batched by similar length with right padding and an attention mask
(lm-eval pads right too, without a mask; the real tokens' logits are the same up to float rounding).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hfx.data.collate import pad_rows
from hfx.errors import HfxError

__all__ = ["ChoiceResult", "context_length", "encode_pair", "encode_text", "loglikelihood", "prefix_token_id",
           "score_choices"]


def context_length(model: Any, max_length: int = 0) -> int:
    """Token budget: ``max_length`` if set, else the model config's ``max_position_embeddings`` (or n_positions)."""
    if max_length:
        return max_length
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048)


def prefix_token_id(tokenizer: Any) -> int:
    """The token an empty context is replaced by: BOS, else EOS (lm-eval's ``HFLM.prefix_token_id``).

    Raises:
        HfxError: the tokenizer has neither.
    """
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise HfxError("an empty context is scored after the BOS (else EOS) token, and this tokenizer has neither")
    return int(token)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as lm-eval's ``HFLM.tok_encode`` gives them (``add_special_tokens=None``).

    ``tokenizer.encode(text)`` with the tokenizer's own special tokens (e.g. Llama's BOS), except that a
    text which already starts with the prefix token's text (BOS, else EOS) is encoded without them: a
    chat-templated prompt whose template writes the BOS (Llama 3's ``{{ bos_token }}``) keeps one BOS,
    not two (``models/huggingface.py`` ``HFLM.tok_encode`` and ``models/utils.py`` ``has_bos_prefix``).
    """
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if bos is not None or eos is not None:
        prefix = tokenizer.decode([prefix_token_id(tokenizer)])
        if prefix and text.startswith(prefix):
            return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context token ids, continuation token ids) of a causal model, split as lm-eval 0.4.13 splits them.

    ``_encode_pair`` for a non-empty context, ``loglikelihood``'s prefix-token rule for an empty one (see the
    module docstring). The context may come back empty when it is only spaces and the tokenizer adds no
    BOS (lm-eval asserts there); :func:`loglikelihood` refuses such a request.
    """
    if context == "":
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode_text(tokenizer, context + continuation)
    ctx = encode_text(tokenizer, context)
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
        model: A causal LM returning ``logits`` aligned with ``input_ids``, ``(B, T, V)`` (plain transformers
            models, and hfx's prompt_tuning / prefix_tuning models).
        tokenizer: Its tokenizer.
        requests: ``(context, continuation)`` strings, e.g. ``("...Label:", " foo")``.
        batch_size: Requests per forward pass.
        max_length: Tokens of one forward pass; 0: the model's (see :func:`context_length`). A longer request
            loses its first tokens, with a warning, as lm-eval's ``_loglikelihood_tokens`` cuts it.

    Raises:
        HfxError: a continuation with no tokens or longer than ``max_length``, or a context with no tokens.
    """
    limit = context_length(model, max_length)
    encoded = [encode_pair(tokenizer, c, x) for c, x in requests]
    cut = 0
    for (ctx, cont), (c, x) in zip(encoded, requests, strict=True):
        if not cont:
            raise HfxError(f"the continuation {x!r} has no tokens after context {c[-40:]!r}")
        if not ctx:
            raise HfxError(f"the context {c!r} has no tokens (the tokenizer adds no BOS); give a non-blank context")
        if len(cont) > limit:
            raise HfxError(f"the continuation {x[:40]!r} is {len(cont)} tokens, more than the limit of {limit}")
        cut += len(ctx) + len(cont) > limit + 1
    if cut:
        warnings.warn(f"{cut} of {len(encoded)} requests are longer than {limit} tokens + 1 and lose their first "
                      "tokens (lm-eval's left truncation)", stacklevel=2)
    # Requests with the same input tokens (one-token continuations of one context: the choices of a
    # multiple-choice question) share one forward pass, as lm-eval's one-token continuation cache does.
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, cont) in enumerate(encoded):
        groups.setdefault(tuple((ctx + cont)[-(limit + 1):][:-1]), []).append(i)  # lm-eval's input, left-cut
    keys = sorted(groups, key=len, reverse=True)  # longest first: similar lengths share a batch
    device = next(model.parameters()).device
    out: list[tuple[float, bool]] = [(0.0, False)] * len(encoded)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        ids, mask = pad_rows(chunk, 0)  # (B, T) each, right-padded: the real tokens keep their positions
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
        for row, key in enumerate(chunk):
            for i in groups[key]:
                cont = encoded[i][1]
                first = len(key) - len(cont)  # logits at position t predict token t + 1: the last len(cont) inputs
                rows = logits[row, first:len(key)].float().log_softmax(-1)  # (C, V)
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
        contexts: Prompts (N,), e.g. from :func:`hfx_plugins.icl.build_prompt`.
        choices: The choice strings of each document (N lists), without the delimiter.
        golds: Index of the right choice per document (N,).
        target_delimiter: Text put before each choice (lm-eval's default ``" "``; ``""`` when the choices
            carry their own space, as label words such as ``" foo"`` do, and for a chat-templated prompt
            of a task without ``gen_prefix``, where lm-eval 0.4.13 scores the bare choice
            (``api/task.py`` ``ConfigurableTask.construct_requests``).
        batch_size, max_length: As in :func:`loglikelihood`.

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
