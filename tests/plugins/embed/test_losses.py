"""Losses: hand computations, sentence-transformers' losses on the same embeddings, and the cached MNRL."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.embed.cached import CachedMNRL
from hfx_plugins.embed.embedder import Embedder
from hfx_plugins.embed.losses import cosine_similarity_loss, mnrl_loss, triplet_loss

E1, E2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])


def test_cosine_loss_by_hand() -> None:
    # cos((1,0),(1,1)) = 1/sqrt(2); label 0.5 -> (0.7071 - 0.5)^2 = 0.04289
    assert cosine_similarity_loss(E1, torch.tensor([[1.0, 1.0]]), torch.tensor([0.5])).item() == pytest.approx(
        (1 / math.sqrt(2) - 0.5) ** 2, abs=1e-7)


def test_triplet_loss_by_hand() -> None:
    # Triplet loss (Schroff et al. 2015; sentence-transformers' TripletLoss, cosine distance) max(0, margin - cos(a,p) + cos(a,n)): satisfied triplet -> 0; reversed -> 0.3 - 0 + 1 = 1.3
    assert triplet_loss(E1, E1, E2, margin=0.3).item() == 0.0
    assert triplet_loss(E1, E2, E1, margin=0.3).item() == pytest.approx(1.3, abs=1e-7)
    # Euclidean: ||a-p|| = sqrt(2), ||a-n|| = 0 -> sqrt(2) - 0 + 1 = 2.4142
    assert triplet_loss(E1, E2, E1, margin=1.0, distance="euclidean").item() == pytest.approx(1 + math.sqrt(2), abs=1e-6)


def test_mnrl_by_hand() -> None:
    # Two orthogonal anchors, each positive equal to its anchor, scale 1: logits [[1, 0], [0, 1]] ->
    # loss = -log(e / (e + 1)) = log(1 + e^-1) per row.
    a = torch.eye(2)
    assert mnrl_loss(a, a, scale=1.0).item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "triplet_cosine", "triplet_euclidean", "mnrl", "mnrl_hard"])
def test_values_and_gradients_match_sentence_transformers(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The hfx validate check, on random embeddings instead of minilm's (fast): expected values and gradients
    # are sentence-transformers 6.2's compute_loss_from_embeddings on the same tensors.
    checks = importlib.import_module("hfx_plugins.embed.checks")
    g = torch.Generator().manual_seed(0)
    monkeypatch.setattr(checks, "_loss_batch", lambda: [torch.randn(8, 16, generator=g) for _ in range(3)])
    monkeypatch.setattr(checks, "_st_minilm", lambda: torch.nn.Identity())
    assert checks._loss_vs_st(kind) <= 1e-6


def test_mismatched_columns_are_one_line_errors() -> None:
    with pytest.raises(HfxError, match="columns of different sizes"):
        triplet_loss(torch.ones(2, 3), torch.ones(3, 3), torch.ones(2, 3), margin=0.1)
    with pytest.raises(HfxError, match="unknown triplet distance"):
        triplet_loss(E1, E1, E1, margin=0.1, distance="manhattan")


def _columns(tok) -> list[dict[str, torch.Tensor]]:
    texts = ["the function returns a list", "a class", "names are bound at run time", "the value", "x", "import it"]
    return [{k: v for k, v in tok(t, padding=True, return_tensors="pt").items() if k != "token_type_ids"}
            for t in (texts, texts[1:] + texts[:1])]


@pytest.mark.parametrize("train_mode", [False, True])
def test_cached_mnrl_gradients_equal_plain_mnrl(train_mode: bool) -> None:
    # GradCache is exact up to rounding: same loss and parameter gradients as plain MNRL. With dropout on,
    # the replay must redraw the first pass's masks: mini_batch_size = batch makes both runs consume the
    # RNG identically (anchors, then positives), so they see the same dropout masks.
    grads = []
    for cached in (False, True):
        model, tok = tiny_model("bert", "base", seed=0)
        emb = Embedder(model, tok).train(train_mode)
        cols = _columns(tok)
        torch.manual_seed(0)
        loss = CachedMNRL(emb, mini_batch_size=6)(cols) if cached else mnrl_loss(emb(**cols[0]), emb(**cols[1]))
        (loss / 2).backward()  # accelerate divides by the accumulation steps: the hook must scale too
        grads.append({n: p.grad.clone() for n, p in emb.backbone.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0]) <= 1e-6


def test_cached_mnrl_small_mini_batches_and_sentence_transformers() -> None:
    checks = importlib.import_module("hfx_plugins.embed.checks")
    # Parameter gradients vs CachedMultipleNegativesRankingLoss, relative to the largest gradient.
    assert checks._cached_vs_st() <= 1e-6
