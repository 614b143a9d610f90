"""GRPOTrainer on a tiny Llama + LoRA: bad input, the first update's KL and ratio, sampling end to end."""

from __future__ import annotations

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.grpo import GRPOConfig, GRPOTrainer

PROMPTS = [[2, 49, 74, 213], [2, 50, 62, 162], [2, 193, 49, 87], [2, 198, 49, 80]]


def length_reward(qr: torch.Tensor, am: torch.Tensor, ctx: int) -> torch.Tensor:
    return am[:, ctx:].sum(1).float() * 0.1 + qr[:, -1].float() / 1000  # (B,)


def policy() -> tuple[torch.nn.Module, object]:
    model, tok = tiny_model("llama", "causal-lm")
    torch.manual_seed(0)
    return hfx.apply(model, "lora", r=2, target_modules=["q_proj", "v_proj"]), tok


def test_config_refuses_bad_groups() -> None:
    with pytest.raises(HfxError, match="num_generations must be at least 2"):
        GRPOConfig(num_generations=1)
    with pytest.raises(HfxError, match="whole groups"):
        GRPOConfig(num_generations=3, batch_size=8)
    with pytest.raises(HfxError, match="loss_type"):
        GRPOConfig(loss_type="sigmoid")


def test_policy_without_lora_is_refused() -> None:
    model, tok = tiny_model("llama", "causal-lm")
    with pytest.raises(HfxError, match="no LoRA adapter"):
        GRPOTrainer(GRPOConfig(num_generations=2, batch_size=4), tok, model, reward_model=length_reward)


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_sampled_updates_start_at_the_reference(estimator: str) -> None:
    model, tok = policy()
    cfg = GRPOConfig(estimator=estimator, num_generations=2, batch_size=4, max_completion_length=5, beta=0.1,
                     learning_rate=1e-2, num_iterations=2)
    trainer = GRPOTrainer(cfg, tok, model, reward_model=length_reward,
                          train_dataset=[{"input_ids": p} for p in PROMPTS])
    history = trainer.train(num_updates=2)
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # B = 0: the policy is its reference
    assert history[1]["kl"] != 0.0 and all(h["completion_length"] >= 1 for h in history)
    assert trainer.last["advantages"].shape == (4,) and trainer.step_losses and len(trainer.step_losses) == 2


def test_prompts_that_do_not_fill_groups_or_steps() -> None:
    model, tok = policy()
    trainer = GRPOTrainer(GRPOConfig(num_generations=2, batch_size=4), tok, model, reward_model=length_reward)
    with pytest.raises(HfxError, match="batch_size=4"):
        trainer.step(PROMPTS[:1])  # 2 completions: half an optimizer step


def test_a_nan_reward_stops_before_any_weight_changes() -> None:
    model, tok = policy()
    trainer = GRPOTrainer(GRPOConfig(num_generations=2, batch_size=4, max_completion_length=3), tok, model,
                          reward_model=lambda qr, am, ctx: torch.tensor([0.0, float("nan"), 1.0, 2.0]))
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    with pytest.raises(HfxError, match="scored completion 1 of update 1 as nan"):
        trainer.step(PROMPTS[:2])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
