"""group_advantages against hand computations and trl 1.16's formulas (grpo_trainer.py, rloo_trainer.py)."""

from __future__ import annotations

import pytest
import torch

from hfx.errors import HfxError
from hfx_plugins.grpo import group_advantages

R = torch.tensor([1.0, 2.0, 4.0, 0.0, 0.0, 3.0])  # two prompts x G = 3, trl's order


def test_grpo_group_scaling_by_hand() -> None:
    # group 1: mean 7/3, std (Bessel) sqrt(((4/3)^2 + (1/3)^2 + (5/3)^2) / 2) = sqrt(7/3)
    std = (7 / 3) ** 0.5
    want = torch.tensor([-4 / 3, -1 / 3, 5 / 3]) / (std + 1e-4)
    assert torch.allclose(group_advantages(R, 3)[:3], want, atol=1e-6)


def test_grpo_batch_and_none_scaling_by_hand() -> None:
    centred = torch.tensor([-4 / 3, -1 / 3, 5 / 3, -1.0, -1.0, 2.0])
    assert torch.allclose(group_advantages(R, 3, scale_rewards="none"), centred, atol=1e-6)
    # trl's "batch": nanstd of all six rewards (Bessel) around the group means
    assert torch.allclose(group_advantages(R, 3, scale_rewards="batch"), centred / (R.std() + 1e-4), atol=1e-6)


def test_rloo_leave_one_out_by_hand() -> None:
    # r - mean of the other two: 1 - 3, 2 - 2.5, 4 - 1.5; 0 - 1.5, 0 - 1.5, 3 - 0
    want = torch.tensor([-2.0, -0.5, 2.5, -1.5, -1.5, 3.0])
    assert torch.allclose(group_advantages(R, 3, "rloo"), want)
    whitened = (want - want.mean()) / (want.std() + 1e-4)  # trl RLOOConfig.normalize_advantages
    assert torch.allclose(group_advantages(R, 3, "rloo", normalize_advantages=True), whitened, atol=1e-6)


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_a_tied_group_gets_zero_never_nan(estimator: str, scale: str) -> None:
    # float32 0.1 three times: the float mean is not 0.1, and trl's r - mean then divided by 1e-4 is not 0
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.5, 0.2, 0.9])
    adv = group_advantages(rewards, 3, estimator, scale)
    assert torch.isfinite(adv).all() and (adv[:3] == 0).all() and (adv[3:] != 0).all()
    assert (group_advantages(torch.full((4,), 7.0), 2, estimator, scale) == 0).all()


def test_bad_groups_are_one_line_errors() -> None:
    with pytest.raises(HfxError, match="at least 2"):
        group_advantages(R, 1)
    with pytest.raises(HfxError, match="whole groups"):
        group_advantages(R, 4)
    with pytest.raises(HfxError, match="estimator"):
        group_advantages(R, 3, "ppo")
