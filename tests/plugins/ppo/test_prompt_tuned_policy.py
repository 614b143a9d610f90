"""PPO (and grpo, dpo) with a prompt- or prefix-tuned policy: real positions only, or a one-line refusal.

The expected log-probs and values come from a hand computation on the plain tiny model: the prompt's rows put in
front of the token embeddings (positions 0..n-1 for the prompt, the rollout's own positions moved by n), the last
hidden state of the real positions only, the LM head and the value head applied to it; for prefix tuning, the
prefix's keys and values given as the model's past key values.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.ppo.apply import value_head
from hfx_plugins.ppo.config import PPOConfig
from hfx_plugins.ppo.trainer import PPOTrainer, left_pad
from hfx_plugins.prefix_tuning import layer_states

N = 3  # virtual tokens


def _reward():
    return tiny_model("llama", "sequence-classification", seed=1, num_labels=1)[0]


def _rows(tok) -> list[list[int]]:
    return [tok(t)["input_ids"] for t in ["the function returns a value", "a class", "import the module", "print"]]


def _trainer(policy, tok, ref_model=None) -> PPOTrainer:
    cfg = PPOConfig(learning_rate=1e-2, batch_size=4, num_ppo_epochs=1, response_length=5, temperature=0.7)
    trainer = PPOTrainer(cfg, tok, policy, ref_model=ref_model, reward_model=_reward(),
                         train_dataset=[{"input_ids": r} for r in _rows(tok)])
    with torch.no_grad():  # a nonzero value head, so the values depend on the hidden states
        value_head(policy).summary.weight.normal_(generator=torch.Generator().manual_seed(3))
    return trainer


def _hand(base, ro, temperature: float, head, prompt=None, prefix=None):
    """(log-probs, values), each (B, T), of the rollout's responses under base + prompt or prefix, by hand."""
    mask = ro.attention_mask.long()
    ids = ro.query_responses.masked_fill(mask == 0, 0)
    pos = mask.cumsum(1) - mask  # trl's positions: real tokens counted from 0, pads at 0
    b = ids.shape[0]
    if prompt is not None:  # prompt tuning: (B, n + S, d) embeddings, mask and positions widened by n
        embeds = torch.cat([prompt.expand(b, -1, -1), base.get_input_embeddings()(ids)], 1)
        wide = torch.cat([torch.ones(b, N, dtype=mask.dtype), mask], 1)
        pos = torch.cat([torch.arange(N).expand(b, N), pos + N], 1)
        hidden = base.model(inputs_embeds=embeds, attention_mask=wide, position_ids=pos).last_hidden_state[:, N:]
    else:  # prefix tuning: the prefix is the past key values of every layer
        cache = DynamicCache(config=base.config)
        for i, (k, v) in enumerate(prefix):
            cache.update(k, v, i)
        wide = torch.cat([torch.ones(b, N, dtype=mask.dtype), mask], 1)
        hidden = base.model(input_ids=ids, attention_mask=wide, position_ids=pos + N,
                            cache=cache).last_hidden_state  # (B, S, H)
    p = ro.context_length
    logp = torch.log_softmax(base.lm_head(hidden[:, p - 1:-1]) / temperature, -1)  # (B, T, V)
    return logp.gather(2, ro.responses.unsqueeze(-1)).squeeze(-1), head(hidden[:, p - 1:-1])


@pytest.mark.parametrize("plugin", ["prompt_tuning", "prefix_tuning"])
def test_ppo_trains_a_prompt_learned_policy_against_a_frozen_copy(plugin: str) -> None:
    # Before: prompt tuning failed with a raw tensor-size error (the value head read n + T hidden states).
    torch.manual_seed(0)
    base, tok = tiny_model("llama", "causal-lm", 0)
    policy = hfx.apply(copy.deepcopy(base), plugin, num_virtual_tokens=N)
    ref = copy.deepcopy(policy)  # the starting policy, frozen by the trainer
    trainer = _trainer(policy, tok, ref_model=ref)
    queries, qmask = left_pad(_rows(tok), tok.pad_token_id)
    stats = trainer.step(queries, qmask)  # sampled through generate(), scored, one optimizer step
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert trainer.last.kl.abs().max().item() == 0.0  # the policy equalled its frozen copy before the step
    exp = trainer.make_experience(trainer.last.rollout)
    with torch.no_grad():
        if plugin == "prompt_tuning":
            want = _hand(base, exp.rollout, 0.7, value_head(policy), prompt=policy.prompt_encoder()[:N])
        else:
            states = layer_states(policy.prefix_encoder(), 4, base.config.num_hidden_layers,
                                  base.config.num_key_value_heads, 1, torch.float32)
            want = _hand(base, exp.rollout, 0.7, value_head(policy), prefix=states)
    torch.testing.assert_close(exp.logprobs, want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(exp.values, want[1].squeeze(-1).masked_fill(~exp.value_mask, 0.0),
                               rtol=1e-5, atol=1e-5)
    assert exp.kl.abs().sum().item() > 0  # the prompt trained; its frozen copy did not


@pytest.mark.parametrize("plugin", ["prompt_tuning", "prefix_tuning"])
def test_a_trained_prompt_cannot_be_its_own_reference(plugin: str) -> None:
    base, tok = tiny_model("llama", "causal-lm", 0)
    alone = hfx.apply(copy.deepcopy(base), plugin, num_virtual_tokens=N)
    with pytest.raises(HfxError, match=rf"ppo cannot train a {plugin} policy as its own reference") as err:
        _trainer(alone, tok)
    assert "\n" not in str(err.value)
    both = hfx.apply(hfx.apply(copy.deepcopy(base), "lora", r=2, target_modules=["q_proj"]), plugin,
                     num_virtual_tokens=N)  # LoRA disabled would keep the trained prompt in the reference
    with pytest.raises(HfxError, match=rf"ppo cannot train a {plugin} policy.*LoRA adapter disabled"):
        _trainer(both, tok)


def test_a_frozen_prompt_under_a_lora_policy_stays_in_policy_and_reference() -> None:
    # prompt tuning frozen, LoRA trained: the reference (LoRA disabled) is the starting policy, prompt included.
    base, tok = tiny_model("llama", "causal-lm", 0)
    policy = hfx.apply(copy.deepcopy(base), "prompt_tuning", num_virtual_tokens=N)
    policy.prompt_encoder.requires_grad_(False)
    policy = hfx.apply(policy, "lora", r=2, target_modules=["q_proj", "v_proj"])
    trainer = _trainer(policy, tok)
    trainer.step(*left_pad(_rows(tok), tok.pad_token_id))
    assert trainer.last.kl.abs().max().item() == 0.0  # B = 0 at the first rollout: policy == reference
    exp = trainer.make_experience(trainer.last.rollout)
    with torch.no_grad():
        ref_lp = _hand(base, exp.rollout, 0.7, value_head(policy), prompt=policy.prompt_encoder()[:N])[0]
    torch.testing.assert_close(exp.ref_logprobs, ref_lp, rtol=1e-5, atol=1e-5)  # the reference keeps the prompt


@pytest.mark.parametrize("trainer", ["grpo", "dpo"])
def test_grpo_and_dpo_refuse_a_trained_prompt_as_reference(trainer: str) -> None:
    base, tok = tiny_model("llama", "causal-lm", 0)
    policy = hfx.apply(hfx.apply(copy.deepcopy(base), "lora", r=2, target_modules=["q_proj"]), "prompt_tuning",
                       num_virtual_tokens=N)
    with pytest.raises(HfxError, match=rf"{trainer} cannot train a prompt_tuning policy as its own reference"):
        if trainer == "grpo":
            from hfx_plugins.grpo import GRPOConfig, GRPOTrainer

            GRPOTrainer(GRPOConfig(), tok, policy, reward_model=_reward(),
                        train_dataset=[{"input_ids": r} for r in _rows(tok)])
        else:
            from hfx_plugins.dpo import DPOConfig, DPOTrainer

            DPOTrainer(policy, processing_class=tok, dpo_config=DPOConfig())


@pytest.mark.parametrize("plugin", ["prompt_tuning", "prefix_tuning"])
def test_score_heads_refuse_a_prompt_learned_base_in_either_order(plugin: str) -> None:
    # The score head (hfx.heads.ScoreModel, behind reward and finetune) reads the trunk, which the prompt-learning
    # hooks on the ...ForCausalLM never reach: the prompt would be dropped silently, so both orders are refused.
    base, _ = tiny_model("llama", "causal-lm", 0)
    learned = hfx.apply(copy.deepcopy(base), plugin, num_virtual_tokens=N)
    with pytest.raises(HfxError, match=rf"reward cannot be applied to a {plugin} model") as err:
        hfx.apply(learned, "reward")
    assert "\n" not in str(err.value)
    with pytest.raises(HfxError, match=rf"{plugin} cannot be applied to a reward model \(RewardModel\)"):
        hfx.apply(hfx.apply(copy.deepcopy(base), "reward"), plugin, num_virtual_tokens=N)
    bare, _ = tiny_model("llama", "base", 0)
    with pytest.raises(HfxError, match=rf"{plugin} cannot be applied to a finetune model"):
        hfx.apply(hfx.apply(bare, "finetune", num_labels=2), plugin, num_virtual_tokens=N)


def test_dpo_scores_a_prompt_tuned_policy_through_its_prompt() -> None:
    # dpo with ref_model=: the completion log-probs are those of a hand computation with the prompt's rows in
    # front of the embeddings and the n virtual positions dropped; the reference (the plain model) has no prompt.
    from hfx_plugins.dpo.data import collate_pairs, tokenize_pair
    from hfx_plugins.dpo.logps import completion_logps, dpo_batch_loss

    base, tok = tiny_model("llama", "causal-lm", 0)
    policy = hfx.apply(copy.deepcopy(base), "prompt_tuning", num_virtual_tokens=N)
    batch = collate_pairs([tokenize_pair(tok, "the function", " returns a value", " a class"),
                           tokenize_pair(tok, "import", " the module", " print the list now")], tok.pad_token_id)
    with torch.no_grad():
        got = completion_logps(policy, batch)  # (4,)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = torch.cat([policy.prompt_encoder()[:N].expand(4, -1, -1), base.get_input_embeddings()(ids)], 1)
        wide = torch.cat([torch.ones(4, N, dtype=mask.dtype), mask], 1)
        logits = base(inputs_embeds=embeds, attention_mask=wide).logits[:, N:]  # (4, T, V) real positions
        logp = torch.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None])[..., 0]  # (4, T - 1)
        want = (logp * batch["completion_mask"][:, 1:]).sum(1)
        loss, parts = dpo_batch_loss(policy, batch, 0.1, "sigmoid", ref_model=copy.deepcopy(base).requires_grad_(False))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts["chosen_logps"], want[:2], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("plugin", ["prompt_tuning", "prefix_tuning"])
def test_grpo_trains_lora_under_a_frozen_prompt(plugin: str) -> None:
    # A frozen prompt or prefix is part of the starting policy and of its reference (LoRA disabled): at the first
    # update the policy equals the reference (LoRA's B = 0), so the summed KL is 0; after it, LoRA has moved.
    from hfx_plugins.grpo import GRPOConfig, GRPOTrainer

    base, tok = tiny_model("llama", "causal-lm", 0)
    policy = hfx.apply(copy.deepcopy(base), plugin, num_virtual_tokens=N)
    getattr(policy, {"prompt_tuning": "prompt_encoder", "prefix_tuning": "prefix_encoder"}[plugin]).requires_grad_(False)
    policy = hfx.apply(policy, "lora", r=2, target_modules=["q_proj", "v_proj"])
    cfg = GRPOConfig(num_generations=2, batch_size=4, max_completion_length=4, beta=0.1, learning_rate=1e-2)
    trainer = GRPOTrainer(cfg, tok, policy, reward_model=lambda qr, am, ctx: (qr[:, ctx:] * am[:, ctx:]).float().mean(1),
                          train_dataset=[{"input_ids": r} for r in _rows(tok)])
    history = trainer.train(num_updates=2)
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6) and history[1]["kl"] != 0.0


@pytest.mark.parametrize("order", [("prompt_tuning", "prefix_tuning"), ("prefix_tuning", "prompt_tuning")])
def test_prompt_and_prefix_tuning_do_not_stack(order: tuple[str, str]) -> None:
    # Each hook would read the other's widened mask as its own (before: prompt then prefix failed in generate()
    # with a mask-shape error). peft has no stacking of prompt-learning methods to compare with.
    base, _ = tiny_model("llama", "causal-lm", 0)
    first = hfx.apply(base, order[0], num_virtual_tokens=N)
    with pytest.raises(HfxError, match=rf"{order[1]} cannot be applied to a {order[0]} model") as err:
        hfx.apply(first, order[1], num_virtual_tokens=N)
    assert "\n" not in str(err.value)
