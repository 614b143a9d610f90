"""hfx.metrics: each measure against a hand computation or scipy, and its one-line errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from hfx.errors import HfxError
from hfx.metrics import (
    exact_match,
    normalize_answer,
    paired_cosine,
    pairs_spearman,
    pairwise_spearman,
    perplexity,
    scored_pairs,
    spearman,
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
