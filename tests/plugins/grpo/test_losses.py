"""GRPO's and RLOO's losses: a hand computation, and trl 1.16's ``_compute_loss`` on the same inputs."""

from __future__ import annotations

import math

import pytest
import torch

from hfx.errors import HfxError
from hfx_plugins.grpo import grpo_loss, k3, rloo_loss
from hfx_plugins.grpo.checks import TOL, _trl_grpo, formula_diffs


def test_clipped_token_loss_by_hand() -> None:
    # ratios e^0.5 and e^-0.5; A = 1: -min(1.649, 1.28), -min(0.607, 0.8); A = -1: -min(-1.649, -1.28), -min(-0.607, -0.8)
    logps, old = torch.tensor([[0.0, 0.0]]), torch.tensor([[-0.5, 0.5]])
    _, per_token, stats = grpo_loss(logps, old, torch.tensor([1.0]), torch.ones(1, 2), 0.2, 0.28)
    assert torch.allclose(per_token, torch.tensor([[-1.28, -math.exp(-0.5)]]))
    assert stats["clip_ratio"].item() == 0.5  # only the first is clipped in trl's sense (ratio above 1 + eps, A > 0)
    _, per_token, _ = grpo_loss(logps, old, torch.tensor([-1.0]), torch.ones(1, 2), 0.2, 0.28)
    assert torch.allclose(per_token, torch.tensor([[math.exp(0.5), 0.8]]))


def test_normalisations_by_hand() -> None:
    # ratio 1 everywhere, A = (-1, -3): every token of row 1 loses 1 (3 tokens), row 2's one token loses 3
    z, mask, adv = torch.zeros(2, 3), torch.tensor([[1, 1, 1], [1, 0, 0]]), torch.tensor([-1.0, -3.0])

    def loss(kind: str, **kw: float) -> float:
        return grpo_loss(z, z, adv, mask, 0.2, 0.2, kind, **kw)[0].item()

    assert loss("grpo") == pytest.approx((1.0 + 3.0) / 2)  # per completion, then over completions
    assert loss("bnpo") == pytest.approx((3 * 1.0 + 3.0) / 4)  # over the 4 tokens
    assert loss("dr_grpo", max_completion_length=8) == pytest.approx(6.0 / (2 * 8))
    assert loss("dapo", num_items=8.0) == pytest.approx(6.0 / 8)
    assert loss("dapo") == pytest.approx(6.0 / 4)  # default divisor: this step's tokens


def test_k3_is_zero_at_the_reference_and_positive_elsewhere() -> None:
    x = torch.tensor([-1.0, -2.0])
    assert (k3(x, x) == 0).all() and (k3(x, x + 0.3) > 0).all()


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_equals_trl(loss_type: str) -> None:
    diffs = formula_diffs("grpo", loss_type, 0.04)
    assert diffs["per_token"] <= TOL and diffs["loss"] <= TOL


def test_kl_without_bias_correction_equals_trl() -> None:
    assert formula_diffs("grpo", "dapo", 0.04, bias_correction=False)["loss"] <= TOL


@pytest.mark.parametrize("bias_correction", [True, False])
def test_gradient_at_ratio_one_equals_trl(bias_correction: bool) -> None:
    # on-policy (old = the step's own log-probs, detached): trl's ratio on the KL term still adds k3 * grad log p
    g = torch.Generator().manual_seed(1)
    logps = (-torch.rand(3, 4, generator=g) * 2).requires_grad_()
    ref, adv = logps.detach() + torch.randn(3, 4, generator=g) * 0.5, torch.randn(3, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    inputs = {"prompt_ids": torch.ones(3, 1, dtype=torch.long), "prompt_mask": torch.ones(3, 1, dtype=torch.long),
              "completion_ids": torch.ones(3, 4, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "ref_per_token_logps": ref, "num_items_in_batch": torch.tensor(7.0)}
    theirs = torch.autograd.grad(_trl_grpo(logps, inputs, "dapo", 0.1, 0.2, 0.2, 4, bias_correction), logps)[0]
    loss = grpo_loss(logps, logps.detach(), adv, mask, 0.2, 0.2, "dapo", 0.1, ref, 4, 7.0, bias_correction)[0]
    mine = torch.autograd.grad(loss, logps)[0]
    assert torch.allclose(mine, theirs, atol=1e-7)
    other = grpo_loss(logps, logps.detach(), adv, mask, 0.2, 0.2, "dapo", 0.1, ref, 4, 7.0, not bias_correction)[0]
    assert not torch.allclose(torch.autograd.grad(other, logps)[0], theirs, atol=1e-4)  # the option matters


def test_rloo_loss_equals_trl() -> None:
    diffs = formula_diffs("rloo")
    assert diffs["per_token"] <= TOL and diffs["loss"] <= TOL
    loss, per_seq, _ = rloo_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([1.0, -3.0]), torch.ones(2, 2),
                                 0.2, 0.2)
    assert torch.equal(per_seq, torch.tensor([-1.0, 3.0])) and loss.item() == 1.0


def test_beta_without_reference_is_an_error() -> None:
    with pytest.raises(HfxError, match="ref_logps"):
        grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), 0.2, 0.2, beta=0.1)
