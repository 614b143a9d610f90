"""The 95% intervals of the embedding student's scores, and where its training sentences come from."""

from __future__ import annotations

import numpy as np
import pytest

from hfx.metrics import pairs_spearman, pairwise_spearman
from hfx_plugins.distill.metrics import agreement_estimate, default_sentences, pairs_spearman_estimate


def _pairs(n: int, seed: int = 0) -> tuple[list[tuple[str, str, float]], dict[str, np.ndarray]]:
    """n scored pairs with 0 / 0.5 / 1 scores (as pydoc_pairs) and embeddings whose cosine tracks the score."""
    rng = np.random.default_rng(seed)
    pairs, emb = [], {}
    for i in range(n):
        score = float(rng.choice([0.0, 0.5, 1.0]))
        a = rng.normal(size=8)
        emb[f"a{i}"], emb[f"b{i}"] = a, a * score + rng.normal(size=8)
        pairs.append((f"a{i}", f"b{i}", score))
    return pairs, emb


def test_pairs_interval_is_scipys_percentile_bootstrap() -> None:
    from scipy.stats import bootstrap, spearmanr

    pairs, emb = _pairs(300)
    embed = lambda texts: np.stack([emb[t] for t in texts])  # noqa: E731
    est = pairs_spearman_estimate(embed, pairs)
    assert float(est) == pytest.approx(pairs_spearman(embed, pairs), abs=1e-12)  # the same value
    a, b = embed([p[0] for p in pairs]), embed([p[1] for p in pairs])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    gold = np.array([p[2] for p in pairs])
    # Reference: scipy's paired percentile bootstrap of the same statistic (its own random draws, so the
    # bounds agree to Monte Carlo error: 1,000 resamples give about +-0.01 on a bound).
    ref = bootstrap((cos, gold), lambda x, y: spearmanr(x, y)[0], paired=True, vectorized=False,
                    n_resamples=1000, method="percentile", rng=np.random.default_rng(1)).confidence_interval
    assert est.n == 300 and est.ci95[0] < float(est) < est.ci95[1]
    assert est.ci95 == pytest.approx((ref.low, ref.high), abs=0.03)


def test_agreement_interval_contains_the_value_and_is_a_point_for_the_same_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    y = x + rng.normal(size=x.shape)
    est = agreement_estimate(x, y, resamples=100)
    assert float(est) == pytest.approx(pairwise_spearman(x, y), abs=1e-12)  # the same value
    assert est.n == 60 and est.ci95[0] < float(est) < est.ci95[1] < 1.0
    same = agreement_estimate(x, x, resamples=20)  # every resample ranks the pairs identically
    assert float(same) == pytest.approx(1.0) and same.ci95 == pytest.approx((1.0, 1.0))


def test_sentiment_sentences_train_and_test_sentences_never_do() -> None:
    from hfx.data.bundled import load_bundled

    probe = load_bundled("sentiment")
    base, held = default_sentences(300)
    train, held2 = default_sentences(300, sentiment_sentences=50)
    assert held2 == held and train[: len(base)] == base
    assert train[len(base):] == list(probe["train"]["text"][:50])
    everything, _ = default_sentences(300, sentiment_sentences=10_000)
    assert not set(everything) & set(probe["test"]["text"])
