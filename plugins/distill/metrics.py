"""How much of the teacher a student keeps: embedding agreement, a downstream score, perplexity, speed.

The two rank correlations are :mod:`hfx.metrics`' (shared with the embed plugin):

- :func:`hfx.metrics.pairwise_spearman`: Spearman correlation between the student's and the teacher's cosine
  similarities over every pair of held-out sentences (1.0 = the student ranks all pairs exactly as the teacher
  does); the quality measure of sentence-transformers' distillation examples, with the teacher as reference.
- :func:`hfx.metrics.pairs_spearman` on ``held_out_pairs`` (the test split of the bundled ``pydoc_pairs``:
  next sentence 1, same topic 0.5, other topic 0): a task score the teacher has too.

Here:

- ``probe_accuracy``: a logistic-regression probe on frozen embeddings, trained on the train split of a
  labelled set and scored on its test split (the bundled ``sentiment`` set).
- ``pairs_spearman_estimate`` and ``agreement_estimate``: the two rank correlations with a percentile
  bootstrap 95% interval (Efron & Tibshirani 1993), resampling the scored pairs, or the held-out sentences.
- ``token_perplexity``: exp of the token-weighted mean next-token loss on held-out text.
- ``throughput``: items per second of a forward pass over pre-tokenised batches, models timed in turn,
  fastest of ``repeats`` passes (on a shared CPU the fastest pass is the least disturbed one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hfx.data.collate import IGNORE_INDEX
from hfx.metrics import Estimate, paired_cosine, perplexity, scored_pairs, spearman
from hfx_plugins.distill.objective import DistillationObjective

__all__ = ["agreement_estimate", "default_sentences", "encode", "held_out_pairs", "pairs_spearman_estimate",
           "probe_accuracy", "throughput", "token_perplexity", "without_pair_sentences"]

BOOTSTRAP_RESAMPLES = 1000
"""Resamples of the bootstrap intervals (seeded: the same embeddings give the same interval)."""


@torch.no_grad()
def encode(model: nn.Module, tokenizer: Any, texts: Sequence[str], objective: DistillationObjective,
           batch_size: int = 64, max_length: int = 128) -> torch.Tensor:
    """Sentence embeddings of ``texts`` in eval mode. -> (N, H)"""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        out.append(objective.embed(model, dict(enc)).cpu())  # (b, H)
    model.train(was_training)
    return torch.cat(out)  # (N, H)


def held_out_pairs() -> list[tuple[str, str, float]]:
    """(text, text, score) pairs of ``pydoc_pairs``' test split: the held-out task score of embedding students."""
    from hfx.data.bundled import load_bundled

    return scored_pairs(load_bundled("pydoc_pairs")["test"])


def without_pair_sentences(texts: Sequence[str], pairs: Sequence[tuple[str, str, float]]) -> list[str]:
    """``texts`` less every sentence of ``pairs``, so that the scored sentences never train."""
    in_pairs = {t for a, b, _ in pairs for t in (a, b)}
    return [t for t in texts if t not in in_pairs]


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (scipy's ``rankdata``, ties averaged), rows independent. (R, N) -> (R, N)"""
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``a`` with the same row of ``b``: Pearson's r of their ranks. (R, N) -> (R,)"""
    ra, rb = _rank_rows(a), _rank_rows(b)  # (R, N)
    ra -= ra.mean(-1, keepdims=True)
    rb -= rb.mean(-1, keepdims=True)
    den = np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))  # (R,)
    return np.divide((ra * rb).sum(-1), den, out=np.zeros_like(den), where=den > 0)  # (R,)


def pairs_spearman_estimate(embed: Callable[[list[str]], Any], pairs: Sequence[tuple[str, str, float]],
                            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Estimate:
    """:func:`hfx.metrics.pairs_spearman` (same value) with a percentile bootstrap 95% interval over the pairs.

    Why a bootstrap: the scores take three values (0 / 0.5 / 1), so the ranks are heavily tied and the Fisher z
    interval's normal approximation for Spearman's rho (Fieller et al. 1957) does not apply; resampling the
    P pairs (the unit the score averages over) needs no such assumption. An anchor recurs in three pairs, so
    the pairs are not quite independent and the interval is somewhat narrow.

    Args:
        embed: texts (N,) -> embeddings (N, H), a numpy array or CPU tensor.
        pairs: ``(text, text, score)`` pairs.
        resamples: bootstrap resamples; seed: their generator's seed.
    """
    texts = list(dict.fromkeys(t for a, b, _ in pairs for t in (a, b)))
    emb = np.asarray(embed(texts))  # (N, H)
    row = {t: i for i, t in enumerate(texts)}
    cos = paired_cosine(emb[[row[p[0]] for p in pairs]], emb[[row[p[1]] for p in pairs]])  # (P,)
    gold = np.asarray([p[2] for p in pairs], dtype=np.float64)  # (P,)
    idx = np.random.default_rng(seed).integers(0, len(pairs), size=(resamples, len(pairs)))  # (R, P)
    boot = _spearman_rows(cos[idx], gold[idx])  # (R,)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Estimate(spearman(cos, gold), len(pairs), (lo, hi))


def agreement_estimate(emb: Any, ref: Any, resamples: int = 200, seed: int = 0) -> Estimate:
    """:func:`hfx.metrics.pairwise_spearman` (same value) with a percentile bootstrap 95% interval over sentences.

    The N sentences are what was sampled, not the N(N-1)/2 pairs (each sentence enters N-1 of them), so each
    resample draws N sentences with replacement and scores every pair of two different draws whose sentences
    differ (a sentence paired with its own copy would add a cosine of 1 to both sides). ``emb`` and ``ref``
    (N, H): the student's and the teacher's embeddings of the same sentences.
    """
    from hfx.metrics import pairwise_spearman

    a, b = np.asarray(emb, dtype=np.float64), np.asarray(ref, dtype=np.float64)  # (N, H)
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # (N, H), unit rows
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)  # (N, H)
    ca, cb = na @ na.T, nb @ nb.T  # (N, N) cosine similarities
    n, rng, boot = len(a), np.random.default_rng(seed), []
    iu = np.triu_indices(n, 1)
    for _ in range(resamples):
        pick = rng.integers(0, n, size=n)  # (N,)
        i, j = pick[iu[0]], pick[iu[1]]  # (N(N-1)/2,) sentence indices of each pair of draws
        keep = i != j
        boot.append(_spearman_rows(ca[i[keep], j[keep]][None], cb[i[keep], j[keep]][None])[0])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Estimate(pairwise_spearman(a, b), n, (lo, hi))


def default_sentences(eval_sentences: int, docstring_sentences: int = 0,
                      sentiment_sentences: int = 0) -> tuple[list[str], list[str]]:
    """(train, held_out) sentences of an embedding student without ``data.path``.

    The last ``eval_sentences`` pydoc sentences (the last topics: different subjects) are held out; the rest,
    plus up to ``docstring_sentences`` standard-library docstring sentences and up to ``sentiment_sentences``
    sentences of the bundled sentiment set's train split (the probe's training texts; its test split never
    trains), train, in that order. The caller still removes the scored pairs' sentences
    (:func:`without_pair_sentences`).
    """
    from hfx.data.bundled import load_bundled
    from hfx.data.docstrings import stdlib_docstring_sentences
    from hfx.data.text import pydoc_sentences

    sentences = pydoc_sentences()
    train, held_out = sentences[:-eval_sentences], sentences[-eval_sentences:]
    kept_out = set(held_out)
    if docstring_sentences:  # more text for the teacher to label
        train += [s for s in stdlib_docstring_sentences(docstring_sentences) if s not in kept_out]
    if sentiment_sentences:  # the downstream task's kind of text: short sentences around a sentiment word
        train += [s for s in load_bundled("sentiment")["train"]["text"][:sentiment_sentences] if s not in kept_out]
    return train, held_out


def probe_accuracy(train_emb: torch.Tensor, train_labels: Sequence[int],
                   test_emb: torch.Tensor, test_labels: Sequence[int]) -> float:
    """Accuracy of a logistic-regression probe (scikit-learn, L2, C=1) trained on frozen embeddings.

    ``train_emb`` (N, H) and ``test_emb`` (M, H) on the CPU, one label per row.
    """
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000)
    probe.fit(train_emb.numpy(), list(train_labels))
    return float(probe.score(test_emb.numpy(), list(test_labels)))


@torch.no_grad()
def token_perplexity(model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """exp(mean next-token loss), weighting every predicted token equally (not every batch).

    Args:
        model: A causal LM (``model(input_ids, attention_mask).logits``: (B, T, V)).
        batches: Collated batches with ``input_ids``, ``attention_mask`` and ``labels`` (B, T), IGNORE_INDEX at padding.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        labels = batch["labels"].to(device)  # (B, T), IGNORE_INDEX at padding
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        target = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        total += nll.item()
        count += int((target != IGNORE_INDEX).sum())
    model.train(was_training)
    return perplexity(total / max(count, 1))  # nats per predicted token


@torch.no_grad()
def throughput(forwards: dict[str, Callable[[dict[str, torch.Tensor]], Any]], batches: Sequence[dict[str, torch.Tensor]],
               count: Callable[[dict[str, torch.Tensor]], int], repeats: int = 3) -> dict[str, float]:
    """Items per second of each forward function over ``batches`` (fastest of ``repeats`` passes).

    ``forwards`` maps a name to ``f(batch)`` (a model in eval mode, e.g. ``lambda b: model(**b)``).
    """
    best = {name: math.inf for name in forwards}
    items = sum(count(b) for b in batches)
    for f in forwards.values():
        f(batches[0])  # warm-up: first-call allocations are not the model's speed
    for _ in range(repeats):
        for name, f in forwards.items():  # interleaved, so a burst of load hits every model alike
            start = time.perf_counter()
            for b in batches:
                f(b)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: items / seconds for name, seconds in best.items()}
