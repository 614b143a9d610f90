"""Best-of-n: sample n answers per prompt from a policy, keep the one the reward model scores highest.

The baseline every RLHF method must beat with the same reward model (Stiennon et al. 2020,
https://arxiv.org/abs/2009.01325; Gao et al. 2022, https://arxiv.org/abs/2210.10760): no training, the
optimisation happens at sampling time. Its KL to the sampling policy has the closed form
``log n - (n - 1) / n`` used by both papers (Beirami et al. 2024, https://arxiv.org/abs/2401.01879, show it is
an upper bound of the exact KL), so its place on a gold-vs-sqrt(KL) plot needs no estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.ppo.rollout import Rollout, last_token_scores, sample
from hfx_plugins.ppo.trainer import left_pad

__all__ = ["BestOfN", "best_of_n", "best_of_n_kl"]


@dataclass
class BestOfN:
    """One batch of prompts answered by best-of-n.

    Shapes: b prompts, n samples each, S = prompt + response positions of the batch.
    """

    rollout: Rollout  # every sample: (b * n) rows, prompt-major (row i * n + j is prompt i's j-th sample)
    scores: torch.Tensor  # (b, n) reward-model score of every sample
    chosen: torch.Tensor  # (b,) index in 0..n-1 of the highest-scored sample (the first one on ties)

    def chosen_rows(self) -> torch.Tensor:
        """(b,) row of each prompt's chosen sample in ``rollout``."""
        n = self.scores.size(1)
        return torch.arange(self.scores.size(0)) * n + self.chosen


def best_of_n_kl(n: int) -> float:
    """``log n - (n - 1) / n`` nats: the KL of best-of-n to the policy it samples from (Stiennon et al. 2020,
    appendix; Gao et al. 2022 eq. 1), an upper bound of the exact value (Beirami et al. 2024).

    Raises:
        HfxError: ``n < 1``.
    """
    if n < 1:
        raise HfxError(f"best-of-n needs n >= 1 samples per prompt, got {n}")
    return math.log(n) - (n - 1) / n


@torch.no_grad()
def best_of_n(policy: nn.Module, reward_model: Any, prompts: list[list[int]] | list[torch.Tensor], n: int,
              max_new_tokens: int, temperature: float, stop_token_id: int | None, pad_token_id: int, seed: int,
              batch_prompts: int = 8) -> Iterator[BestOfN]:
    """Sample ``n`` answers per prompt and pick the one ``reward_model`` scores highest, batch by batch.

    Sampling is :func:`~hfx_plugins.ppo.rollout.sample` (plain softmax(logits / temperature), stopping at
    ``stop_token_id``) under a forked random state seeded with ``seed`` (the caller's stream is left as it was);
    the score is :func:`~hfx_plugins.ppo.rollout.last_token_scores` (any reward model ppo takes).

    Args:
        policy: The causal LM sampled from (no training).
        reward_model: Scores ``prompt + answer`` (a reward model module or a callable, as ppo's).
        prompts: Token ids of each prompt.
        n: Samples per prompt, >= 1.
        max_new_tokens: Most tokens per answer.
        temperature: Sampling temperature (> 0).
        stop_token_id: Token that ends an answer (None: none).
        pad_token_id: Pad id.
        seed: Seed of the forked random state.
        batch_prompts: Prompts per batch (``batch_prompts * n`` rows are sampled together).

    Yields:
        :class:`BestOfN` per batch of prompts, in order.

    Raises:
        HfxError: ``n < 1`` or ``batch_prompts < 1``.
    """
    if n < 1 or batch_prompts < 1:
        raise HfxError(f"best_of_n needs n >= 1 and batch_prompts >= 1, got n={n}, batch_prompts={batch_prompts}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_prompts):
            chunk = [[int(t) for t in p] for p in prompts[start:start + batch_prompts]]
            rows = [p for p in chunk for _ in range(n)]  # prompt-major: (b * n) rows
            q, m = left_pad(rows, pad_token_id)  # (b * n, P) left-padded
            ro = sample(policy, q, m, max_new_tokens, temperature, stop_token_id, pad_token_id)
            scores = last_token_scores(reward_model, ro.query_responses, ro.attention_mask, ro.context_length)
            scores = scores.float().view(len(chunk), n)  # (b, n)
            yield BestOfN(ro, scores, scores.argmax(dim=1))  # argmax: the first maximum on ties
