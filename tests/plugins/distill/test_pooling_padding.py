"""Distillation's sentence pooling reads real tokens only, on either padding side (hand-made mask)."""

import torch

from hfx_plugins.distill.objective import pool


def test_cls_is_the_first_real_token_under_left_padding() -> None:
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)  # (B, T, H)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]])  # right padding, left padding
    assert torch.equal(pool(hidden, mask, "cls"), hidden[[0, 1], [0, 2]])
    # mean: the average of the real tokens' vectors, computed by hand
    assert torch.allclose(pool(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1, 2:].mean(0)]))
