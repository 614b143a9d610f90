"""hfx.metrics: each measure against a hand computation or scipy, and its one-line errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from hfx.errors import HfxError
from hfx.metrics import (
    Estimate,
    exact_match,
    interval_columns,
    mean,
    normalize_answer,
    paired_cosine,
    pairs_spearman,
    pairwise_spearman,
    perplexity,
    proportion,
    scored_pairs,
    spearman,
    supported_change,
    t_interval,
    wilson_interval,
)


def test_imports_no_torch() -> None:
    code = "import hfx.metrics, sys; assert 'torch' not in sys.modules and 'scipy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spearman_by_hand_and_errors() -> None:
    # Same order -> 1, reversed -> -1; [1, 2, 3] vs [1, 3, 2]: d = (0, 1, 1), rho = 1 - 6*2 / (3*8) = 0.5.
    assert spearman([0.1, 0.5, 0.9], [0, 1, 2]) == pytest.approx(1.0)
    assert spearman(np.array([0.9, 0.5, 0.1]), np.array([0, 1, 2])) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    with pytest.raises(HfxError, match="equally long"):
        spearman([1.0, 2.0], [1.0])
    with pytest.raises(HfxError, match="at least 2"):
        spearman([1.0], [1.0])


def test_pairwise_spearman_by_hand() -> None:
    # Scaling rows changes no cosine -> the two models agree exactly (1.0). Unit vectors at 0, 60, 90 degrees
    # have cosines (x0x1, x0x2, x1x2) = (0.5, 0, 0.866); at 0, 30, 90 degrees (0.866, 0, 0.5): ranks (2, 1, 3)
    # vs (3, 1, 2), d = (1, 0, 1), rho = 1 - 6*2 / (3*8) = 0.5.
    x = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    y = np.array([[1.0, 0.0], [math.sqrt(3) / 2, 0.5], [0.0, 1.0]])
    assert pairwise_spearman(x, 3.0 * x) == pytest.approx(1.0)
    assert pairwise_spearman(x, y) == pytest.approx(0.5)
    with pytest.raises(HfxError, match="same N >= 3"):
        pairwise_spearman(x, x[:2])
    with pytest.raises(HfxError, match="2-D"):
        pairwise_spearman(x[0], x)


def test_scored_pairs_both_layouts() -> None:
    triplets = [{"anchor": "a", "positive": "p", "negative": "n", "related": "r"}]
    assert scored_pairs(triplets) == [("a", "p", 1.0), ("a", "n", 0.0), ("a", "r", 0.5)]
    assert scored_pairs([{"anchor": "a", "positive": "p", "negative": "n"}]) == [("a", "p", 1.0), ("a", "n", 0.0)]
    assert scored_pairs([{"text": "x", "text_pair": "y", "label": 3}]) == [("x", "y", 3.0)]
    with pytest.raises(HfxError, match="row 0 has columns text; scored pairs need anchor"):
        scored_pairs([{"text": "x"}])


def test_paired_cosine_and_pairs_spearman_by_hand() -> None:
    # cos((1,0),(1,0)) = 1, cos((1,0),(0.6,0.8)) = 0.6, cos((1,0),(0,1)) = 0.
    vec = {"a": [1.0, 0.0], "p": [1.0, 0.0], "r": [0.6, 0.8], "n": [0.0, 2.0]}
    a = np.array([vec["a"]] * 3)
    assert paired_cosine(a, np.array([vec["p"], vec["r"], vec["n"]])) == pytest.approx([1.0, 0.6, 0.0], abs=1e-6)
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.array([vec[t] for t in texts])

    pairs = [("a", "p", 1.0), ("a", "r", 0.5), ("a", "n", 0.0)]
    assert pairs_spearman(embed, pairs) == pytest.approx(1.0)  # cosines 1, 0.6, 0 rank as scores 1, 0.5, 0
    assert calls == [["a", "p", "r", "n"]]  # each distinct text once
    assert pairs_spearman(embed, [(x, y, 1.0 - s) for x, y, s in pairs]) == pytest.approx(-1.0)
    with pytest.raises(HfxError, match="same shape"):
        paired_cosine(a, a[:2])
    with pytest.raises(HfxError, match=r"returned shape \(2,\) for 4 texts"):
        pairs_spearman(lambda t: np.zeros(2), pairs)


def test_perplexity() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)  # a uniform guess over 20 tokens
    assert perplexity(1e6) == math.exp(50.0) and perplexity(float("inf")) == math.exp(50.0)
    with pytest.raises(HfxError, match="nats per token"):
        perplexity(float("nan"))


def test_exact_match_normalisation() -> None:
    assert normalize_answer("  Positive.\nbecause it is") == "positive"
    assert normalize_answer("\n\n Yes \n") == "yes" and normalize_answer("  ") == ""
    # 2 of 3 match: case and final period ignored; "negative!" keeps its "!".
    assert exact_match(["Positive.", "negative!", "4"], ["positive", "negative", 4]) == pytest.approx(2 / 3)
    assert exact_match([], []) == 0.0
    with pytest.raises(HfxError, match="2 answers for 1 targets"):
        exact_match(["a", "b"], ["a"])


Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def test_wilson_interval_closed_forms_and_quadratic() -> None:
    # 0 of n and n of n: the bounds are z^2 / (n + z^2) and n / (n + z^2) (Wilson 1927, closed form).
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z95**2 / (10 + Z95**2)), abs=1e-12)
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z95**2), 1.0), abs=1e-12)
    # 8 of 10: the bounds are the roots p of (p_hat - p)^2 = z^2 p (1 - p) / n, solved here as a quadratic
    # (a different computation from the formula in hfx.metrics); statsmodels 0.14 gives (0.4902, 0.9433).
    n, p_hat = 10, 0.8
    roots = sorted(np.roots([1 + Z95**2 / n, -(2 * p_hat + Z95**2 / n), p_hat**2]).real)
    assert wilson_interval(8, n) == pytest.approx(roots, abs=1e-12)
    assert wilson_interval(8, n) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    lo, hi = wilson_interval(41, 100, confidence=0.99)
    assert lo < 0.41 < hi and (hi - lo) > np.subtract(*reversed(wilson_interval(41, 100)))  # 99% is wider
    for bad in ((11, 10), (-1, 10), (0, 0)):
        with pytest.raises(HfxError, match="wilson_interval"):
            wilson_interval(*bad)
    with pytest.raises(HfxError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


def test_t_interval_matches_scipy() -> None:
    from scipy import stats

    x = np.random.default_rng(0).normal(0.3, 2.0, size=37)
    want = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert t_interval(x) == pytest.approx(want, rel=1e-12)
    assert t_interval([1.0, 3.0]) == pytest.approx((2 - 12.706204736 * 1 / 1, 2 + 12.706204736), rel=1e-9)  # t_1 table
    with pytest.raises(HfxError, match="at least 2"):
        t_interval([1.0])
    with pytest.raises(HfxError, match="finite"):
        t_interval([1.0, math.nan])


def test_estimates_are_the_same_numbers_and_serialise_as_floats() -> None:
    import copy
    import json
    import pickle

    acc = proportion(0.7, 40)
    assert acc == 0.7 and isinstance(acc, float) and acc.n == 40
    assert acc.ci95 == wilson_interval(28, 40)
    assert json.dumps({"accuracy": acc}) == '{"accuracy": 0.7}' and f"{acc:.2f}" == "0.70"
    for back in (pickle.loads(pickle.dumps(acc)), copy.deepcopy(acc)):
        assert isinstance(back, Estimate) and back == acc and back.n == 40 and back.ci95 == acc.ci95
    values = [0.5, -0.25, 0.75, 0.0]
    m = mean(values)
    assert m == pytest.approx(0.25, abs=0) and m.n == 4 and m.ci95 == t_interval(values)
    kept = mean(values, value=0.25000001)  # a float32 mean, kept as the caller computed it
    assert float(kept) == 0.25000001 and kept.ci95 == m.ci95
    assert exact_match(["a", "b"], ["a", "c"]).n == 2  # type: ignore[union-attr]


def test_interval_columns_and_supported_change() -> None:
    before = interval_columns({"loss": 0.6, "accuracy": proportion(0.5, 100)})
    after = interval_columns({"loss": 0.3, "accuracy": proportion(0.8, 100)})
    assert set(before) == {"loss", "accuracy", "accuracy_n", "accuracy_ci95_lo", "accuracy_ci95_hi"}
    assert before["accuracy_n"] == 100 and before["accuracy_ci95_lo"] == wilson_interval(50, 100)[0]
    assert interval_columns(before) == before  # idempotent (a resumed run reads before.json back)
    assert supported_change(before, after, "accuracy") is True  # 0.50 [0.40, 0.60] -> 0.80 [0.71, 0.87]
    close = interval_columns({"accuracy": proportion(0.52, 100)})
    assert supported_change(before, close, "accuracy") is False  # 0.50 -> 0.52 on 100: overlapping
    assert supported_change(before, after, "loss") is None  # no interval
