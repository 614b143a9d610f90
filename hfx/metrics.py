"""Evaluation measures that several plugins report, in one place.

Pure functions on numbers, texts and arrays: importing this module imports neither torch nor transformers
(numpy always; scipy on first use). Arrays may be numpy arrays or detached CPU torch tensors (anything
``numpy.asarray`` reads).

- Rank correlation: :func:`spearman` (scipy's Spearman rho, the STS-benchmark measure of similarity quality),
  :func:`pairwise_spearman` (how alike two embedding models rank every pair of the same sentences).
- Pair scoring: :func:`scored_pairs` turns triplet rows (anchor, positive, negative, optional related) or
  scored pairs into ``(text, text, score)``; :func:`paired_cosine` and :func:`pairs_spearman` score an
  embedding model on them.
- Language models: :func:`perplexity` from a mean next-token loss.
- Generation: :func:`normalize_answer` and :func:`exact_match` for short greedy answers.
- Uncertainty: :func:`wilson_interval` (a proportion) and :func:`t_interval` (a mean), 95% by default;
  :class:`Estimate`, a float that carries its n and interval (made by :func:`proportion` and :func:`mean`), so
  a recipe's ``evaluate()`` keeps returning numbers and the runner writes every interval in one place
  (:func:`interval_columns`, :func:`supported_change`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hfx.errors import HfxError

__all__ = [
    "MAX_PERPLEXITY_LOSS",
    "Estimate",
    "exact_match",
    "interval_columns",
    "mean",
    "normalize_answer",
    "paired_cosine",
    "pairs_spearman",
    "pairwise_spearman",
    "perplexity",
    "proportion",
    "scored_pairs",
    "spearman",
    "supported_change",
    "t_interval",
    "wilson_interval",
]

ScoredPair = tuple[str, str, float]

MAX_PERPLEXITY_LOSS = 50.0
"""Losses above this (nats per token) are clipped before exp: exp(50) ~ 5e21 already means "no model of the
text", and an untrained model's loss can overflow ``math.exp`` (above ~709) or reach inf."""

_TRIPLET = ("anchor", "positive", "negative")
_PAIR = ("text", "text_pair", "label")


# ---------------------------------------------------------------------------------------------------------
# Rank correlation
# ---------------------------------------------------------------------------------------------------------

def spearman(predicted: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation of two score lists (scipy's ``spearmanr``, tied ranks averaged).

    The STS-benchmark measure of similarity quality (sentence-transformers' ``EmbeddingSimilarityEvaluator``).

    Args:
        predicted: Scores (N,), e.g. cosine similarities.
        gold: Reference scores (N,) in any unit (only their order matters).

    Returns:
        rho in [-1, 1]; nan when either list is constant (no order to compare).

    Raises:
        HfxError: the lists differ in length or hold fewer than 2 scores.
    """
    from scipy.stats import spearmanr

    p, g = np.asarray(predicted, dtype=np.float64).ravel(), np.asarray(gold, dtype=np.float64).ravel()
    if len(p) != len(g) or len(g) < 2:
        raise HfxError(f"spearman needs two equally long lists of at least 2 scores, got {len(p)} and {len(g)}")
    return float(spearmanr(p, g).statistic)


def _cosine_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise HfxError(f"embeddings must be a 2-D array (N, H), got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (N, H), rows of unit length
    return x @ x.T  # (N, N)


def pairwise_spearman(emb_a: Any, emb_b: Any) -> float:
    """Spearman correlation of two models' cosine similarities over all N(N-1)/2 pairs of the same N texts.

    1.0 means model a ranks every pair of sentences exactly as model b does: the agreement measure of
    sentence-transformers' distillation examples (teacher as b), also used to compare a quantized model with
    its float original. Computed in float64.

    Args:
        emb_a: Embeddings (N, H) of the texts by the first model.
        emb_b: Embeddings (N, H') of the same texts, in the same order, by the second model (H' may differ).

    Raises:
        HfxError: an array is not 2-D, the row counts differ, or N < 3 (fewer than 2 pairs).
    """
    sa, sb = _cosine_matrix(emb_a), _cosine_matrix(emb_b)  # (N, N) each
    if sa.shape != sb.shape or len(sa) < 3:
        raise HfxError(f"pairwise_spearman needs embeddings of the same N >= 3 texts, got {len(sa)} and {len(sb)} rows")
    iu = np.triu_indices(len(sa), k=1)  # upper triangle without the diagonal: N(N-1)/2 pairs
    return spearman(sa[iu], sb[iu])


# ---------------------------------------------------------------------------------------------------------
# Pair scoring
# ---------------------------------------------------------------------------------------------------------

def scored_pairs(rows: Iterable[Mapping[str, Any]]) -> list[ScoredPair]:
    """``(text, text, score)`` pairs from triplet rows or scored-pair rows.

    A triplet row (``anchor, positive, negative``, optional ``related``) gives ``(anchor, positive, 1.0)``,
    ``(anchor, negative, 0.0)`` and, with ``related``, ``(anchor, related, 0.5)`` (a graded STS-style target:
    next sentence, same topic, other topic). A row ``text, text_pair, label`` gives ``(text, text_pair, label)``.

    Args:
        rows: A ``datasets.Dataset`` or any iterable of row mappings, all of one of the two layouts.

    Raises:
        HfxError: a row has neither layout.
    """
    out: list[ScoredPair] = []
    for i, r in enumerate(rows):
        if all(c in r for c in _TRIPLET):
            out += [(r["anchor"], r["positive"], 1.0), (r["anchor"], r["negative"], 0.0)]
            if r.get("related") is not None:
                out.append((r["anchor"], r["related"], 0.5))
        elif all(c in r for c in _PAIR):
            out.append((r["text"], r["text_pair"], float(r["label"])))
        else:
            raise HfxError(f"row {i} has columns {', '.join(r)}; scored pairs need {', '.join(_TRIPLET)} "
                           f"(optional related) or {', '.join(_PAIR)}")
    return out


def paired_cosine(a: Any, b: Any) -> np.ndarray:
    """cos(a_i, b_i) of matching rows: a, b (N, H) -> (N,) float32.

    Raises:
        HfxError: the arrays are not 2-D or differ in shape.
    """
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise HfxError(f"paired_cosine needs two 2-D arrays (N, H) of the same shape, got {a.shape} and {b.shape}")
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # (N, H)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)  # (N, H)
    return (na * nb).sum(1)  # (N,)


def pairs_spearman(embed: Callable[[list[str]], Any], pairs: Sequence[ScoredPair]) -> float:
    """Spearman of cos(embed(a), embed(b)) with the pairs' scores: an embedding model's similarity quality.

    Each distinct text is embedded once, in first-seen order (an anchor recurs in three pairs).

    Args:
        embed: texts (N,) -> embeddings (N, H), a numpy array or CPU tensor.
        pairs: ``(text, text, score)`` pairs, e.g. from :func:`scored_pairs`.

    Raises:
        HfxError: fewer than 2 pairs, or ``embed`` returned the wrong number of rows.
    """
    texts = list(dict.fromkeys(t for a, b, _ in pairs for t in (a, b)))
    emb = np.asarray(embed(texts))  # (N, H)
    if emb.ndim != 2 or len(emb) != len(texts):
        raise HfxError(f"embed returned shape {emb.shape} for {len(texts)} texts; it must return (N, H)")
    row = {t: i for i, t in enumerate(texts)}
    cos = paired_cosine(emb[[row[p[0]] for p in pairs]], emb[[row[p[1]] for p in pairs]])  # (P,)
    return spearman(cos, [p[2] for p in pairs])


# ---------------------------------------------------------------------------------------------------------
# Language models and generation
# ---------------------------------------------------------------------------------------------------------

def perplexity(mean_loss: float, max_loss: float = MAX_PERPLEXITY_LOSS) -> float:
    """exp(mean next-token cross-entropy), the loss in nats per token.

    Args:
        mean_loss: Mean negative log-likelihood per predicted token (natural log).
        max_loss: The loss is clipped here first (see :data:`MAX_PERPLEXITY_LOSS`), so the result is finite.

    Raises:
        HfxError: the loss is nan or negative (not a cross-entropy).
    """
    if math.isnan(mean_loss) or mean_loss < 0:
        raise HfxError(f"perplexity needs a mean cross-entropy >= 0 (nats per token), got {mean_loss}")
    return math.exp(min(mean_loss, max_loss))


def normalize_answer(text: str) -> str:
    """The form two answers are compared in: the first non-empty line, stripped, lower-cased, without a final '.'.

    Lighter than SQuAD's normalisation (which also drops all punctuation and articles): the targets here are
    short labels or phrases, and a model that goes on after its answer is judged on its first line only.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0].strip().rstrip(".").strip().lower() if lines else ""


def exact_match(answers: Sequence[str], targets: Sequence[Any]) -> float:
    """Share of answers equal to their target after :func:`normalize_answer` (0.0 for no answers).

    Args:
        answers: Generated texts (N,).
        targets: Expected answers (N,); non-strings are compared as ``str(target)``.

    Raises:
        HfxError: the two lists differ in length.
    """
    if len(answers) != len(targets):
        raise HfxError(f"exact_match got {len(answers)} answers for {len(targets)} targets")
    hits = sum(normalize_answer(a) == normalize_answer(str(t)) for a, t in zip(answers, targets, strict=True))
    return proportion(hits / len(targets), len(targets)) if targets else 0.0


# ---------------------------------------------------------------------------------------------------------
# Uncertainty: 95% intervals of a proportion or a mean, carried by the number itself
# ---------------------------------------------------------------------------------------------------------

def _z(confidence: float) -> float:
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise HfxError(f"confidence must be in (0, 1), got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2))  # two-sided: 1.959964 at 0.95


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927; statsmodels' ``proportion_confint(method="wilson")``).

    Unlike the normal (Wald) interval p +- z sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at 0 or
    n successes: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).

    Args:
        successes: Count of successes, 0 <= successes <= n (a float count is allowed, as statsmodels does).
        n: Number of trials, >= 1.
        confidence: Coverage of the two-sided interval.

    Raises:
        HfxError: n < 1, successes outside [0, n], or confidence outside (0, 1).
    """
    if n < 1 or not 0 <= successes <= n:
        raise HfxError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z, p = _z(confidence), successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a mean: mean +- t_{n-1} s / sqrt(n), s the sample standard deviation (ddof=1).

    The same numbers as ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=scipy.stats.sem(values))``.

    Args:
        values: Per-example values (N,), N >= 2.
        confidence: Coverage of the two-sided interval.

    Raises:
        HfxError: fewer than 2 values, a non-finite value, or confidence outside (0, 1).
    """
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64).ravel()  # (N,)
    if len(x) < 2 or not np.isfinite(x).all():
        raise HfxError(f"t_interval needs at least 2 finite values, got {len(x)}")
    _z(confidence)  # the same check of confidence
    centre, half = float(x.mean()), float(t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return centre - half, centre + half


class Estimate(float):
    """A metric value (a float, equal to the number the recipe computed) with its n and 95% interval.

    ``json`` writes it as the plain float, and it compares, adds and formats as one; the runner reads ``n``
    and ``ci95`` off it (:func:`interval_columns`). Make one with :func:`proportion` or :func:`mean`.
    """

    n: int
    ci95: tuple[float, float]

    def __new__(cls, value: float, n: int = 0, ci95: tuple[float, float] = (math.nan, math.nan)) -> Estimate:
        obj = super().__new__(cls, value)
        obj.n, obj.ci95 = n, (float(ci95[0]), float(ci95[1]))
        return obj

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (e.g. broadcast between processes) with its n and interval
        return (Estimate, (float(self), self.n, self.ci95))


def proportion(share: float, n: int) -> Estimate:
    """``share`` (a proportion of ``n`` examples, as the caller computed it) with its Wilson 95% interval.

    The value is kept as given (a float32 mean stays that number); the interval uses ``round(share * n)``
    successes.

    Raises:
        HfxError: n < 1 or share outside [0, 1].
    """
    return Estimate(share, n, wilson_interval(round(share * n), n))


def mean(values: Sequence[float] | np.ndarray, value: float | None = None) -> Estimate:
    """The mean of per-example ``values`` (N,) with its t 95% interval (:func:`t_interval`).

    Args:
        values: Per-example values (N,); a list, numpy array or CPU tensor.
        value: The mean as the caller computed it (a float32 ``tensor.mean()``), kept as given; None:
            ``statistics.fmean`` of the values (exact summation).

    Raises:
        HfxError: fewer than 2 values or a non-finite one.
    """
    import statistics

    x = np.asarray(values, dtype=np.float64).ravel()  # (N,)
    centre = statistics.fmean(x.tolist()) if value is None else value
    return Estimate(centre, len(x), t_interval(x))


def interval_columns(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` plus, for each :class:`Estimate`, ``<name>_n``, ``<name>_ci95_lo`` and ``<name>_ci95_hi``.

    Flat numbers rather than a list, so that summary.json's metrics stay a mapping of numbers. Keys already
    present (a recipe's own, or a second call) are kept as they are.
    """
    out = dict(metrics)
    for name, value in metrics.items():
        if isinstance(value, Estimate) and value.n and f"{name}_n" not in metrics:
            out.update({f"{name}_n": value.n, f"{name}_ci95_lo": value.ci95[0], f"{name}_ci95_hi": value.ci95[1]})
    return out


def supported_change(before: Mapping[str, Any], after: Mapping[str, Any], name: str) -> bool | None:
    """Whether the 95% intervals of ``name`` before and after are disjoint (:func:`interval_columns` keys).

    Disjoint intervals are a conservative test of a difference (Schenker & Gentleman 2001: overlapping ones
    can still differ at 5%); the examples before and after are the same, so the intervals are not even
    independent. None when either side has no interval.
    """
    lo, hi = f"{name}_ci95_lo", f"{name}_ci95_hi"
    if not all(k in m for k in (lo, hi) for m in (before, after)):
        return None
    return bool(after[lo] > before[hi] or after[hi] < before[lo])
