"""Ranking rows, their expansion to pairs, and the losses (hand formulas; trl's compute_loss for pairwise)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx_plugins.reward import preference_loss, rankings_to_groups, rankings_to_pairs
from hfx_plugins.reward.checks import trl_pairwise_loss

ROW = {"prompt": "Q: ", "completions": ["a", "b", "c", "d"], "ranking": [2, 0, 3, 1]}


def test_rankings_to_pairs_gives_every_ordered_pair() -> None:
    pairs = hfx.rankings_to_pairs([ROW])
    assert len(pairs) == math.comb(4, 2)
    # order by rank: b (0) > d (1) > a (2) > c (3); each pair winner first, in completion-index order
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("b", "a"), ("a", "c"), ("d", "a"), ("b", "c"), ("b", "d"), ("d", "c")]
    assert all(p["prompt"] == "Q: " for p in pairs)


def test_pairwise_rows_pass_through() -> None:
    row = {"chosen": "good", "rejected": "bad", "margin": 0.5}
    assert rankings_to_pairs([row]) == [row]
    (g,) = rankings_to_groups([row])
    assert g.texts == ["good", "bad"] and g.pairs == [(0, 1)] and g.margin == 0.5


def test_declared_ties_drop_the_tied_pair() -> None:
    row = {**ROW, "ranking": [0, 1, 1, 3], "ties": True}
    (g,) = rankings_to_groups([row])
    assert len(g.pairs) == math.comb(4, 2) - 1 and (1, 2) not in g.pairs and (2, 1) not in g.pairs
    assert g.texts[0] == "Q: a"


@pytest.mark.parametrize("row, message", [
    ({"prompt": "", "completions": ["a"], "ranking": [0]}, "ranking row 1: 1 completions; a ranking needs K >= 2"),
    ({**ROW, "ranking": [0, 1, 2, 4]}, "ranking row 1: rank 4 is out of range"),
    ({**ROW, "ranking": [0, 1, 1, 3]}, "ranking row 1: rank repeated in .* without a declared tie"),
    ({**ROW, "completions": ["a", " ", "c", "d"]}, "ranking row 1: completion 1 is empty"),
    ({**ROW, "ranking": [0, 1]}, "ranking row 1: ranking .* must give one rank per completion"),
    ({"chosen": "", "rejected": "x"}, "pairwise row 1: 'chosen' is empty"),
    ({"text": "x"}, "completions \\+ ranking .* or chosen \\+ rejected"),
])
def test_bad_rows_name_the_row(row: dict, message: str) -> None:
    with pytest.raises(HfxError, match=message):
        rankings_to_groups([ROW, row])
    with pytest.raises(HfxError, match=message):
        rankings_to_pairs([ROW, row])


def test_ranking_loss_is_instructgpt_formula() -> None:
    """-1/C(K,2) sum over the pairs of one prompt of log sigma(r_w - r_l), then the mean over prompts."""
    scores = torch.tensor([0.3, 1.2, -0.4, 0.9, 2.0, -1.0])  # prompt 0: K=4 (indices 0-3), prompt 1: K=2
    ranking = [2, 0, 3, 1]
    pairs0 = [(a, b) if ranking[a] < ranking[b] else (b, a) for a, b in itertools.combinations(range(4), 2)]
    pairs = pairs0 + [(4, 5)]
    w, lo = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    groups = torch.tensor([0] * 6 + [1])
    loss = preference_loss(scores, w, lo, groups, loss_type="ranking")
    s = scores.tolist()
    term = lambda a, b: -math.log(1 / (1 + math.exp(-(s[a] - s[b]))))  # noqa: E731
    expected = (sum(term(a, b) for a, b in pairs0) / 6 + term(4, 5)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    flat = sum(term(a, b) for a, b in pairs) / 7
    assert preference_loss(scores, w, lo, groups, loss_type="pairwise").item() == pytest.approx(flat, abs=1e-6)


@pytest.mark.parametrize("margin, center", [(False, None), (True, None), (True, 0.01)])
def test_pairwise_loss_equals_trl(margin: bool, center: float | None) -> None:
    """Reference: trl 1.16 RewardTrainer.compute_loss itself, on the same scores."""
    g = torch.Generator().manual_seed(1)
    c, r = torch.randn(8, generator=g) * 2, torch.randn(8, generator=g) * 2
    m = torch.rand(8, generator=g) if margin else None
    idx = torch.arange(8)
    ours = preference_loss(torch.cat([c, r]), idx, idx + 8, idx, m, "pairwise", center or 0.0)
    assert abs(ours.item() - trl_pairwise_loss(c, r, m, center).item()) <= 1e-6
    # K = 2 groups: the ranking loss is the same number
    assert abs(preference_loss(torch.cat([c, r]), idx, idx + 8, idx, m, "ranking", center or 0.0).item()
               - ours.item()) <= 1e-6


def test_validate_checks_pass() -> None:
    """`hfx validate plugin=reward`: hfx's pairwise loss against trl's compute_loss (tolerance 1e-6)."""
    from hfx.validate import run_checks

    results = run_checks(["reward"])
    assert len(results) == 3 and all(r.passed for r in results), results
