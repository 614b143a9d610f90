"""dpo_loss against trl 1.16's own ``DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py) and by hand.

Expected values: trl's loss branch for each loss_type, called unbound through hfx_plugins.dpo.checks
(``trl_pair_loss``), and the textbook formulas on one pair worked out below.
"""

from __future__ import annotations

import math

import pytest
import torch

from hfx.errors import HfxError
from hfx_plugins.dpo import dpo_loss
from hfx_plugins.dpo.checks import TOL, formula_diff, trl_pair_loss


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_per_pair_loss_equals_trl(loss_type: str, beta: float) -> None:
    assert formula_diff(loss_type, beta) <= TOL


def test_one_pair_by_hand() -> None:
    # chosen: policy -3, ref -5 (log-ratio +2); rejected: policy -7, ref -6 (log-ratio -1); h = 3
    c, r, rc, rr = (torch.tensor([v]) for v in (-3.0, -7.0, -5.0, -6.0))
    losses, chosen_rewards, rejected_rewards = dpo_loss(c, r, rc, rr, beta=0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-6)  # -log sigmoid(0.5 * 3)
    assert (chosen_rewards.item(), rejected_rewards.item()) == pytest.approx((1.0, -0.5))  # beta x log-ratio
    assert dpo_loss(c, r, rc, rr, 0.2, "hinge")[0].item() == pytest.approx(0.4)  # relu(1 - 0.2 * 3)
    n_c, n_r = torch.tensor([4.0]), torch.tensor([2.0])  # ipo: 2/4 - (-1)/2 = 1; (1 - 1/(2*0.25))^2 = 1
    ipo = dpo_loss(c, r, rc, rr, 0.25, "ipo", chosen_lengths=n_c, rejected_lengths=n_r)[0]
    assert ipo.item() == pytest.approx(1.0)


def test_trl_reference_is_not_constant() -> None:
    # the stand-in really runs trl's branch: a better chosen log-prob lowers trl's sigmoid loss
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    low = trl_pair_loss(torch.full((2, 3), -1.0), mask, -2.0, -3.0, 0.1, "sigmoid")
    high = trl_pair_loss(torch.tensor([[-0.1] * 3, [-1.0] * 3]), mask, -2.0, -3.0, 0.1, "sigmoid")
    assert high < low


def test_rewards_carry_no_gradient() -> None:
    c = torch.tensor([-2.0], requires_grad=True)
    losses, chosen_rewards, _ = dpo_loss(c, torch.tensor([-3.0]), torch.tensor([-2.5]), torch.tensor([-2.5]))
    assert losses.requires_grad and not chosen_rewards.requires_grad


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"beta": 0.0}, "beta must be > 0"), ({"beta": -1.0}, "beta must be > 0"),
    ({"loss_type": "kto"}, "must be one of sigmoid, hinge, ipo"), ({"loss_type": "ipo"}, "pass chosen_lengths"),
])
def test_bad_arguments_are_one_line_errors(kwargs: dict, needle: str) -> None:
    x = torch.zeros(3)
    with pytest.raises(HfxError, match=needle) as err:
        dpo_loss(x, x, x, x, **kwargs)
    assert "\n" not in str(err.value)


def test_shape_mismatch() -> None:
    with pytest.raises(HfxError, match="four \\(P,\\) tensors"):
        dpo_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3), torch.zeros(3))


def test_config_checks_the_same() -> None:
    from hfx_plugins.dpo import DPOConfig, DPORunConfig

    with pytest.raises(HfxError, match="beta must be > 0"):
        DPOConfig(beta=0)
    with pytest.raises(HfxError, match="loss_type"):
        DPOConfig(loss_type="robust")
    with pytest.raises(HfxError, match="dpo.pairs must be one of all, best_vs_worst"):
        DPORunConfig(pairs="random")
