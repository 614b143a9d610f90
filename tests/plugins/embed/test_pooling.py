"""Pooling heads: hand-computed values, sentence-transformers' Pooling on the same inputs, bad modes."""

from __future__ import annotations

import pytest
import torch

from hfx.errors import HfxError
from hfx_plugins.embed.pooling import POOLING_MODES, Pooling, pool

# One sentence of 3 real tokens (then 1 pad), 1-d hidden vectors 1, 2, 4 (pad: 100).
HIDDEN = torch.tensor([[[1.0], [2.0], [4.0], [100.0]]])  # (1, 4, 1)
MASK = torch.tensor([[1, 1, 1, 0]])  # (1, 4)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean", 7 / 3),  # (1 + 2 + 4) / 3
        ("max", 4.0),  # the pad's 100 is ignored
        ("cls", 1.0),  # first real token
        ("lasttoken", 4.0),  # last real token
        ("weightedmean", (1 * 1 + 2 * 2 + 3 * 4) / (1 + 2 + 3)),  # weights 1, 2, 3 -> 17 / 6
    ],
)
def test_pool_by_hand(mode: str, expected: float) -> None:
    assert pool(HIDDEN, MASK, mode).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mode", ["cls", "lasttoken", "weightedmean", "mean", "max"])
def test_left_padding_gives_the_same_vector(mode: str) -> None:
    # Decoders pad on the left: the same tokens shifted right by one pad must pool to the same vector.
    left_h = torch.tensor([[[100.0], [1.0], [2.0], [4.0]]])
    left_m = torch.tensor([[0, 1, 1, 1]])
    assert torch.allclose(pool(left_h, left_m, mode), pool(HIDDEN, MASK, mode), atol=1e-6)


@pytest.mark.parametrize("mode", POOLING_MODES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_matches_sentence_transformers_pooling(mode: str, side: str) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling as STPooling

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 7, 16, generator=g)  # (B, T, H)
    lengths = torch.tensor([7, 5, 2, 1])
    pos = torch.arange(7).unsqueeze(0)  # (1, T)
    mask = (pos < lengths[:, None]) if side == "right" else (pos >= 7 - lengths[:, None])
    mask = mask.long()  # (B, T)
    ref = STPooling(16, mode)({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    # Expected: sentence-transformers 6.2's Pooling on the same tensors; same arithmetic, so <= 1e-6.
    assert (Pooling(mode)(hidden, mask) - ref).abs().max().item() <= 1e-6


def test_normalize_gives_unit_vectors() -> None:
    out = Pooling("mean", normalize=True)(torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.long))
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_unknown_mode_is_one_line_error() -> None:
    with pytest.raises(HfxError, match=r"unknown pooling mode 'maen' \(did you mean 'mean'\?\); choose one of"):
        Pooling("maen")
    with pytest.raises(HfxError, match="unknown pooling mode"):
        pool(HIDDEN, MASK, "sum")
