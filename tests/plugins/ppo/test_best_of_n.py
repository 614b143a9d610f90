"""Best-of-n (``hfx_plugins.ppo.best_of_n``) on a tiny Llama: the samples, the scores, the choice, the KL formula."""

from __future__ import annotations

import math

import pytest
import torch

from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.ppo import best_of_n, best_of_n_kl, last_token_scores, left_pad, sample


def _reward(query_responses: torch.Tensor, attention_mask: torch.Tensor, context_length: int) -> torch.Tensor:
    """A callable reward: the sum of the response's real token ids (B,), so ties are rare and easy to check."""
    return (query_responses[:, context_length:] * attention_mask[:, context_length:]).sum(1).float()


def test_best_of_n_keeps_the_highest_scored_sample() -> None:
    model, tok = tiny_model("llama", "causal-lm")
    prompts = [[2, 50, 73, 51], [2, 49, 369], [2, 7]]
    n, eos, pad = 4, tok.eos_token_id, tok.pad_token_id
    got = list(best_of_n(model, _reward, prompts, n, 6, 0.9, eos, pad, seed=11, batch_prompts=2))
    assert [g.scores.shape for g in got] == [(2, n), (1, n)]
    # By hand: the same seed, the same left-padded prompt-major rows, sampled by ppo's sampler and scored.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        for start, g in zip((0, 2), got, strict=True):
            rows = [p for p in prompts[start:start + 2] for _ in range(n)]
            ro = sample(model, *left_pad(rows, pad), 6, 0.9, eos, pad)
            assert torch.equal(ro.query_responses, g.rollout.query_responses)
            scores = last_token_scores(_reward, ro.query_responses, ro.attention_mask, ro.context_length)
            assert torch.equal(scores.view(-1, n), g.scores)
            for i in range(g.scores.size(0)):
                best = max(range(n), key=lambda j, i=i: (g.scores[i, j].item(), -j))  # highest, first on ties
                assert g.chosen[i].item() == best
                assert g.chosen_rows()[i].item() == i * n + best
    assert any(len(set(g.scores[i].tolist())) > 1 for g in got for i in range(g.scores.size(0)))  # a real choice


def test_best_of_n_kl_closed_form() -> None:
    # log n - (n - 1) / n (Stiennon et al. 2020): n = 1 is the policy itself; n = 4: 1.3863 - 0.75 by hand.
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(1.3862944 - 0.75, abs=1e-7)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16, abs=1e-12)
    with pytest.raises(HfxError, match="n >= 1"):
        best_of_n_kl(0)
    with pytest.raises(HfxError, match="n >= 1"):
        next(best_of_n(None, _reward, [[1]], 0, 4, 1.0, None, 0, seed=0))  # type: ignore[arg-type]
