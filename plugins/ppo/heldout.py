"""Held-out answers sampled the same way before and after training, with their KL to the reference.

ppo, grpo (through ppo's recipe) and dpo report the gold score of these answers; each reads what it needs
from the rollouts (dpo no reward model, ppo also the proxy reward).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from hfx_plugins.ppo.rollout import Rollout, forward_logprobs, sample
from hfx_plugins.ppo.trainer import left_pad

__all__ = ["held_out_rollouts"]


@torch.no_grad()
def held_out_rollouts(policy: nn.Module, reference: Callable[[], tuple[nn.Module, Any]], prompts: list[torch.Tensor],
                      samples: int, max_new_tokens: int, temperature: float, stop_token_id: int | None,
                      pad_token_id: int, seed: int, batch_prompts: int = 16) -> Iterator[tuple[Rollout, list[float]]]:
    """Sample ``samples`` answers per prompt, ``batch_prompts`` prompts at a time, under a fixed seed.

    The random state is forked (:func:`torch.random.fork_rng`) and seeded with ``seed``, so the answers before and
    after training are drawn from the same stream and the caller's stream is left as it was.

    Args:
        policy: The policy being trained.
        reference: Returns the reference model and the context to run it in (the policy with its adapter
            disabled, as ``PPOTrainer.reference`` does).
        prompts: Token ids of each prompt, each (T_p,).
        samples: Answers per prompt.
        max_new_tokens: Most tokens per answer.
        temperature: Sampling temperature, also used for the log-probabilities.
        stop_token_id: Token that ends an answer (None: none).
        pad_token_id: Pad id for the left-padded prompts.
        seed: Seed of the forked random state.
        batch_prompts: Prompts per batch.

    Yields:
        Each batch's rollout (its rows: ``batch_prompts`` x ``samples`` answers, prompt-major) and per answer
        the KL to the reference, k1 summed over its tokens up to and with EOS (nats).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_prompts):
            rows = [p for p in prompts[start:start + batch_prompts] for _ in range(samples)]
            q, m = left_pad(rows, pad_token_id)  # (B, T_q) left-padded
            ro = sample(policy, q, m, max_new_tokens, temperature, stop_token_id, pad_token_id)
            logp, _, _ = forward_logprobs(policy, ro.query_responses, ro.attention_mask, ro.context_length,
                                          temperature, entropy=False)  # (B, T_r)
            ref, ref_ctx = reference()
            with ref_ctx:
                ref_logp, _, _ = forward_logprobs(ref, ro.query_responses, ro.attention_mask, ro.context_length,
                                                  temperature, entropy=False)  # (B, T_r)
            valid = ro.attention_mask[:, ro.context_length:]  # (B, T_r) response tokens up to and with EOS
            yield ro, ((logp - ref_logp) * valid).sum(1).tolist()  # k1 summed over each answer: KL(pi || ref)
