"""PPO's pieces against hand computations (each expected number is worked out in the comment beside it)."""

from __future__ import annotations

import math

import pytest
import torch

from hfx.errors import HfxError
from hfx_plugins.ppo.advantages import gae, masked_whiten, per_token_rewards, response_masks, score_index
from hfx_plugins.ppo.config import PPOConfig
from hfx_plugins.ppo.kl import AdaptiveKLController, kl_penalty
from hfx_plugins.ppo.losses import policy_loss, value_loss
from hfx_plugins.ppo.rollout import build_rollout, sequence_lengths


def test_gae_three_tokens_by_hand() -> None:
    # gamma 0.9, lambda 0.8, r = [0.1, -0.2, 1.0], V = [0.5, 0.4, 0.3], V_3 = 0:
    # d2 = 1.0 - 0.3 = 0.7                  A2 = 0.7
    # d1 = -0.2 + 0.9*0.3 - 0.4 = -0.33     A1 = -0.33 + 0.72*0.7 = 0.174
    # d0 = 0.1 + 0.9*0.4 - 0.5 = -0.04      A0 = -0.04 + 0.72*0.174 = 0.08528
    adv, ret = gae(torch.tensor([[0.1, -0.2, 1.0]]), torch.tensor([[0.5, 0.4, 0.3]]), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[0.08528, 0.174, 0.7]]))
    torch.testing.assert_close(ret, torch.tensor([[0.58528, 0.574, 1.0]]))  # R = A + V


def test_kl_estimators_by_hand() -> None:
    # p = 0.5, p_ref = 0.25: log r = log 0.5; k1 = -log r = log 2; k3 = r - 1 - log r = 0.5 - 1 + log 2
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.log(2) - 0.5)
    # k1 is negative when p < p_ref for the sampled token; k3 never is
    assert kl_penalty(ref, logp, "k1").item() < 0 < kl_penalty(ref, logp, "k3").item()


def test_whitening_over_the_mask() -> None:
    # valid [1, 2, 3]: mean 2, unbiased variance ((1 + 0 + 1) / 2) = 1 -> [-1, 0, 1]; the 100 is masked out
    x, mask = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[True, True, True, False]])
    out = masked_whiten(x, mask)
    torch.testing.assert_close(out[0, :3], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean=False)[0, :3], torch.tensor([1.0, 2.0, 3.0]), atol=1e-6, rtol=0)


def test_clipped_policy_loss_by_hand() -> None:
    # eps 0.2, A = [1, -1], ratios [1.5, 0.5]: max(-1.5, -1.2) = -1.2 and max(0.5, 0.8) = 0.8 -> mean -0.2, both clipped
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))
    loss, stats = policy_loss(new, old, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool), 0.2)
    assert loss.item() == pytest.approx(-0.2) and stats["clipfrac"].item() == 1.0
    # ratio 1.1 inside the range: -A*rho = -1.1, nothing clipped; a masked token adds nothing
    new = torch.log(torch.tensor([[1.1, 9.0]]))
    loss, stats = policy_loss(new, old, torch.tensor([[1.0, 5.0]]), torch.tensor([[True, False]]), 0.2)
    assert loss.item() == pytest.approx(-1.1) and stats["clipfrac"].item() == 0.0


def test_clipped_value_loss_by_hand() -> None:
    # V = 1.0, V_old = 0.5, R = 2.0, c = 0.2: clip(V) = 0.7; max((1-2)^2, (0.7-2)^2) = 1.69 -> 0.5 * 1.69
    loss, stats = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]]),
                             torch.ones(1, 1, dtype=torch.bool), 0.2)
    assert loss.item() == pytest.approx(0.845) and stats["vf_clipfrac"].item() == 1.0


def test_score_placement() -> None:
    # last real tokens at 1 and 3 (T = 4): "last" scores there; trl's "eos+1" one later, but not past T - 1
    lengths = torch.tensor([1, 3])
    assert score_index(lengths, 4, "last").tolist() == [1, 3]
    assert score_index(lengths, 4, "eos+1").tolist() == [2, 3]
    pmask, vmask = response_masks(lengths, 4, "eos+1")
    assert pmask.tolist() == [[True, True, False, False], [True] * 4]
    assert vmask.tolist() == [[True, True, True, False], [True] * 4]
    kl = torch.tensor([[1.0, 2.0, 7.0, 7.0], [1.0, 1.0, 1.0, 1.0]])
    rewards, _ = per_token_rewards(kl, torch.tensor([10.0, 20.0]), lengths, 0.5, pmask, "last")
    # -0.5 * KL on valid tokens (KL after the last token ignored), + score on the last real token
    assert rewards.tolist() == [[-0.5, 9.0, 0.0, 0.0], [-0.5, -0.5, -0.5, 19.5]]


def test_eos_stopping_and_pad_equal_to_eos() -> None:
    # stop token 3: first at index 1 in row 0 (later 3s are ignored), none in row 1 -> its last index, 3
    responses = torch.tensor([[5, 3, 7, 3], [5, 6, 7, 8]])
    lengths, has = sequence_lengths(responses, 3)
    assert lengths.tolist() == [1, 3] and has.tolist() == [True, False]
    # pad == eos == 3: the mask comes from the lengths, so the real EOS stays a real token
    ro = build_rollout(torch.tensor([[9, 9], [0, 9]]), torch.tensor([[1, 1], [0, 1]]), responses, 3, 3)
    assert ro.responses.tolist() == [[5, 3, 3, 3], [5, 6, 7, 8]]
    assert ro.attention_mask.long().tolist() == [[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]]


def test_adaptive_kl_controller_by_hand() -> None:
    # target 6, KL 9: error clip(9/6 - 1) = 0.2 -> beta * (1 + 0.2 * 100 / 1000) = 0.1 * 1.02
    ctl = AdaptiveKLController(0.1, 6.0, 1000.0)
    assert ctl.update(9.0, 100) == pytest.approx(0.102)
    # KL 3: error 3/6 - 1 = -0.5 -> clipped to -0.2: 0.102 * (1 - 0.02)
    assert ctl.update(3.0, 100) == pytest.approx(0.102 * 0.98)


def test_config_errors_are_one_line() -> None:
    with pytest.raises(HfxError, match="kl_estimator"):
        PPOConfig(kl_estimator="k2")
    with pytest.raises(HfxError, match="must divide"):
        PPOConfig(batch_size=6, num_mini_batches=4)
    with pytest.raises(HfxError, match="score_position"):
        PPOConfig(score_position="eos")


def test_cut_responses_are_scored_with_eos_appended() -> None:
    # The expected scores are the reward model's own on the texts written out by hand: a cut response with
    # EOS added after its last token, a finished one as it is (its EOS already ends it).
    import hfx
    from hfx.testing import tiny_model
    from hfx_plugins.ppo.rewards import EosAppendedReward
    from hfx_plugins.ppo.rollout import last_token_scores

    backbone, tok = tiny_model("llama", "base", 0, dropout=0.0)
    rm = hfx.apply(backbone, "reward").eval()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    cut, done = [5, 6, 7, 8, 9], [5, 6, 7, eos]
    ids = torch.tensor([cut, [*done, pad]])  # (2, 5): the finished row is padded after its EOS
    mask = torch.tensor([[1] * 5, [1] * 4 + [0]])
    scores = EosAppendedReward(rm, eos)(ids, mask, 2)
    expected_cut = last_token_scores(rm, torch.tensor([[*cut, eos]]), torch.ones(1, 6, dtype=torch.long), 2)
    expected_done = last_token_scores(rm, torch.tensor([done]), torch.ones(1, 4, dtype=torch.long), 2)
    assert torch.allclose(scores, torch.cat([expected_cut, expected_done]), atol=1e-5)
    assert not torch.allclose(scores[0], last_token_scores(rm, ids, mask, 2)[0])  # without EOS it differs


def test_reward_model_for_scores_with_eos_when_the_reward_model_was_trained_on_eos(tmp_path) -> None:
    # A saved reward model with append_eos (the reward plugin's default) is wrapped in EosAppendedReward; one
    # saved with append_eos=False is used as it is: the score is read where training read it.
    import types

    import hfx
    from hfx.testing import tiny_model
    from hfx_plugins.ppo.rewards import EosAppendedReward, reward_model_for
    from hfx_plugins.reward.io import save

    ctx = types.SimpleNamespace(print=lambda *a: None)
    for append_eos in (True, False):
        backbone, tok = tiny_model("llama", "base", 0, dropout=0.0)
        rm = hfx.apply(backbone, "reward", append_eos=append_eos)
        save(rm, tmp_path / str(append_eos), tokenizer=tok)  # the reward plugin's save: tokenizer included
        got = reward_model_for(str(tmp_path / str(append_eos)), tok, ctx)
        assert isinstance(got, EosAppendedReward) is append_eos
