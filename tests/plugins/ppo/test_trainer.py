"""PPOTrainer end to end on tiny random models (seconds): reference, stopping, pad == eos, NaN handling."""

from __future__ import annotations

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.ppo.config import PPOConfig
from hfx_plugins.ppo.trainer import PPOTrainer, left_pad


def _policy(seed: int = 0):
    model, tok = tiny_model("llama", seed=seed)
    return hfx.apply(model, "lora", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), tok


def _reward(seed: int = 1):
    rm, _ = tiny_model("llama", "sequence-classification", seed=seed, num_labels=1)
    return rm


def _prompts(tok, n: int = 8):
    words = ["the function returns a value", "a class has methods", "import the module", "print the list"]
    return [{"input_ids": tok(words[i % 4])["input_ids"]} for i in range(n)]


def test_first_update_has_zero_kl_and_unit_ratio() -> None:
    # LoRA's B starts at zero, so the policy equals the adapter-disabled reference: every KL is exactly 0 at
    # the first rollout; the rollout's log-probs come from the same forward as training's: first ratio is 1.
    torch.manual_seed(0)
    policy, tok = _policy()
    cfg = PPOConfig(learning_rate=1e-2, batch_size=4, num_ppo_epochs=2, response_length=6, temperature=0.9)
    trainer = PPOTrainer(cfg, tok, policy, reward_model=_reward(), train_dataset=_prompts(tok))
    stats = trainer.step(*left_pad([r["input_ids"] for r in _prompts(tok, 4)], tok.pad_token_id))
    assert trainer.last.kl.abs().max().item() == 0.0
    assert trainer.minibatch_losses[0]["approxkl"] == 0.0 and trainer.minibatch_losses[0]["clipfrac"] == 0.0
    assert stats["kl"] == 0.0
    trainer.step(*left_pad([r["input_ids"] for r in _prompts(tok, 4)], tok.pad_token_id))
    assert trainer.last.kl.abs().sum().item() > 0  # the adapter moved: the reference did not


def test_rollout_stops_at_eos_and_pad_equal_to_eos_trains() -> None:
    torch.manual_seed(0)
    policy, tok = _policy()
    tok.pad_token = tok.eos_token  # pad == eos: handled by lengths, not refused
    eos = tok.eos_token_id
    bias = torch.zeros(len(tok))
    bias[eos] = 3.0  # EOS about 20x likelier than another token: some responses stop early, some do not
    policy.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    cfg = PPOConfig(learning_rate=1e-3, batch_size=8, num_mini_batches=2, num_ppo_epochs=1, response_length=24)
    trainer = PPOTrainer(cfg, tok, policy, reward_model=_reward(), train_dataset=_prompts(tok))
    history = trainer.train(num_updates=2)
    ro = trainer.last.rollout
    assert ro.contains_stop.any() and not ro.contains_stop.all()
    for row, last, has in zip(ro.responses.tolist(), ro.seq_lengths.tolist(), ro.contains_stop.tolist(), strict=True):
        if has:  # the stop token is the last real token, and it is a real (unmasked) position
            assert row[last] == eos and eos not in row[:last]
    assert ro.attention_mask[:, ro.context_length:].sum(1).tolist() == (ro.seq_lengths + 1).tolist()
    assert all(h["score"] == h["score"] for h in history)


def test_missing_eos_penalty_lowers_score() -> None:
    torch.manual_seed(0)
    policy, tok = _policy()
    cfg = PPOConfig(batch_size=4, num_ppo_epochs=1, response_length=3, missing_eos_penalty=5.0)
    rm = _reward()
    trainer = PPOTrainer(cfg, tok, policy, reward_model=rm, train_dataset=_prompts(tok))
    q, m = left_pad([r["input_ids"] for r in _prompts(tok, 4)], tok.pad_token_id)
    eos = tok.eos_token_id
    responses = torch.tensor([[10, eos, 11], [10, 11, 12], [eos, 5, 5], [7, 8, 9]])
    trainer.step(q, m, responses)
    exp = trainer.last
    from hfx_plugins.ppo.rollout import last_token_scores

    raw = last_token_scores(rm, exp.rollout.query_responses, exp.rollout.attention_mask, exp.rollout.context_length)
    # rows 1 and 3 have no EOS: their score is 5 lower; rows 0 and 2 are untouched
    torch.testing.assert_close(raw - exp.scores, torch.tensor([0.0, 5.0, 0.0, 5.0]))


def test_nan_score_and_nan_loss_stop_before_any_weight_changes() -> None:
    torch.manual_seed(0)
    policy, tok = _policy()
    cfg = PPOConfig(batch_size=4, num_ppo_epochs=1, response_length=4)
    q, m = left_pad([r["input_ids"] for r in _prompts(tok, 4)], tok.pad_token_id)

    def nan_reward(ids, mask, last):
        return torch.full((ids.size(0),), float("nan"))

    trainer = PPOTrainer(cfg, tok, policy, reward_model=nan_reward)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(HfxError, match=r"scored response 0 of update 1 as nan"):
        trainer.step(q, m)
    trainer.reward_model = lambda ids, mask, last: torch.zeros(ids.size(0))
    with torch.no_grad():
        hfx_head = trainer.model.ppo_value_head.summary
        hfx_head.bias.fill_(float("inf"))  # values inf -> advantages nan -> loss nan
    with pytest.raises(HfxError, match=r"loss is nan at update 1 \(epoch 1"):
        trainer.step(q, m)
    after = policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "value_head" not in k)


def test_policy_without_adapter_needs_a_reference() -> None:
    model, tok = tiny_model("llama")
    with pytest.raises(HfxError, match="no LoRA adapter"):
        PPOTrainer(PPOConfig(), tok, model, reward_model=_reward())
