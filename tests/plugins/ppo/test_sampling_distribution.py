"""Rollouts are drawn from exactly the distribution the trainers score: softmax(logits / T), whatever the model's
own ``generation_config`` holds; ``stop_token="none"`` generates every position and trains on no pad fill.

transformers 5's ``generate`` fills each field the passed ``GenerationConfig`` leaves unset from the model's own
(``min_p``, ``suppress_tokens``, ``eos_token_id``, ...); hfx's log-probs (``forward_logprobs``) are plain
softmax(logits / T), so a model shipped with sampling fields would be sampled from one distribution and scored
under another (trl 1.16 has this mismatch).
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from transformers import GenerationConfig

from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.ppo import sample
from hfx_plugins.ppo.advantages import response_masks

PROMPT = [2, 50, 73, 51]
ALPHA = 1e-3  # significance of the goodness-of-fit test
DRAWS = 4000  # one sampled step, 4000 rows: 232 tokens have an expected count >= 5
T = 0.8


def _peaked_model() -> torch.nn.Module:
    """A tiny random Llama whose next-token distribution is far from uniform (LM head scaled x8): the largest
    probability after PROMPT is 0.020, so a change of the sampler shows in 4000 draws."""
    model, _ = tiny_model("llama", "causal-lm")
    model.eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    return model


def _with_sampling_fields(model: torch.nn.Module, suppressed: int) -> None:
    """The model's own generation_config as a checkpoint may ship it: min_p, top_k and suppress_tokens set."""
    model.generation_config.min_p = 0.8
    model.generation_config.top_k = 2
    model.generation_config.suppress_tokens = [suppressed]


def _chi_square_p(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square p-value of the drawn ``tokens`` (N,) against ``probs`` (V,): every token with an expected
    count >= 5 is its own bin, the rest pooled in one (Cochran's rule)."""
    observed = torch.bincount(tokens, minlength=probs.numel()).double()  # (V,)
    expected = probs.double() * tokens.numel()  # (V,)
    big = expected >= 5
    obs = torch.cat([observed[big], observed[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    return float(stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


def _scored_probs(model: torch.nn.Module) -> torch.Tensor:
    """(V,) softmax(logits / T) of the step after PROMPT: what forward_logprobs scores."""
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([PROMPT])).logits[0, -1].float() / T, -1)


def test_one_sampled_step_fits_softmax_of_logits_over_t_whatever_the_models_generation_config() -> None:
    model = _peaked_model()
    probs = _scored_probs(model)
    _with_sampling_fields(model, suppressed=int(probs.argmax()))
    queries = torch.tensor([PROMPT]).repeat(DRAWS, 1)  # (N, 4)
    mask = torch.ones_like(queries)
    # Before: transformers' generate with hfx's old config (every field it sets itself) takes min_p, top_k and
    # suppress_tokens from the model: only a few tokens are drawn, never the most likely one.
    old = GenerationConfig(max_new_tokens=1, min_new_tokens=0, do_sample=True, temperature=T, top_k=0, top_p=1.0,
                           repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    with torch.no_grad():
        before = model.generate(input_ids=queries, attention_mask=mask, generation_config=old)[:, -1]
    assert _chi_square_p(before, probs) < ALPHA
    assert int(probs.argmax()) not in before.tolist()
    # After: sample() draws from softmax(logits / T) itself; the model's own config is left as it was.
    torch.manual_seed(0)
    after = sample(model, queries, mask, 1, T, None, 0).responses[:, 0]  # (N,)
    assert _chi_square_p(after, probs) > ALPHA
    assert model.generation_config.min_p == 0.8 and model.generation_config.suppress_tokens == [int(probs.argmax())]


def _step_by_step(model: torch.nn.Module, queries: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """(B, steps) tokens drawn by hand: full forward each step, torch.multinomial on softmax(logits / T), the same
    draws generate makes (one multinomial over the batch per step), no stop token."""
    torch.manual_seed(seed)
    ids = queries
    with torch.no_grad():
        for _ in range(steps):
            probs = torch.softmax(model(ids).logits[:, -1].float() / T, -1)  # (B, V)
            ids = torch.cat([ids, torch.multinomial(probs, 1)], 1)
    return ids[:, queries.size(1):]


def test_stop_token_none_generates_every_position_and_trains_on_no_pad_fill() -> None:
    model, _ = tiny_model("llama", "causal-lm")
    model.eval()
    queries = torch.tensor([PROMPT]).repeat(6, 1)  # (6, 4)
    steps = 8
    by_hand = _step_by_step(model, queries, steps, seed=3)  # (6, 8)
    # The model's EOS: a token drawn at step 1 in some row, so a sampler that stops at it pads that row.
    eos = int(by_hand[0, 1])
    model.generation_config.eos_token_id = eos
    pad = 0
    torch.manual_seed(3)
    ro = sample(model, queries, torch.ones_like(queries), steps, T, None, pad)  # stop_token="none"
    assert torch.equal(ro.responses, by_hand)  # every position sampled, none filled with the pad id
    assert bool(ro.attention_mask.all()) and ro.seq_lengths.tolist() == [steps - 1] * 6
    # The loss's masks (PPOTrainer's, from the lengths): every masked-in position holds a sampled token.
    policy_mask, _ = response_masks(ro.seq_lengths, steps, "last")  # (6, 8) positions in the loss and the KL
    assert bool(policy_mask.all()) and torch.equal(ro.responses[policy_mask], by_hand[policy_mask])
    with pytest.raises(AssertionError):  # the sampler of before: stops at the model's EOS, pads the rest
        torch.manual_seed(3)
        old = GenerationConfig(max_new_tokens=steps, do_sample=True, temperature=T, top_k=0, top_p=1.0,
                               eos_token_id=None, pad_token_id=pad)
        with torch.no_grad():
            out = model.generate(input_ids=queries, attention_mask=torch.ones_like(queries), generation_config=old)
        assert torch.equal(out[:, 4:], by_hand)


def test_a_sampling_setting_that_scoring_ignores_is_refused_by_name() -> None:
    with pytest.raises(HfxError, match="grpo.top_p"):
        from hfx_plugins.grpo import GRPOConfig

        GRPOConfig(top_p=0.9)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("stop", [True, False])
def test_the_decode_loop_draws_the_same_tokens_as_transformers_generate(family: str, stop: bool) -> None:
    """sample()'s own loop (``_decode``) against transformers' generate with the same seed: the same tokens, with
    left padding, a LoRA adapter (random B, so it matters), EOS stopping or none, Conv1D (gpt2) or not."""
    import hfx
    from hfx_plugins.ppo.rollout import _decode, _plain_decoder, generate_responses
    from hfx_plugins.ppo.trainer import left_pad

    model, _ = tiny_model(family, "causal-lm")
    targets = ["c_attn"] if family == "gpt2" else ["q_proj", "v_proj"]
    model = hfx.apply(model, "lora", r=4, target_modules=targets).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    assert _plain_decoder(model)
    q, m = left_pad([PROMPT, [2, 9], [2, 50, 73, 51, 7, 8], PROMPT], 0)  # (4, 6) left-padded
    torch.manual_seed(5)
    first = generate_responses(model, q, m, 10, T, None, 0)
    eos = int(first[1, 2]) if stop else None  # a token drawn mid-row: some rows stop there, others run on
    torch.manual_seed(5)
    want = generate_responses(model, q, m, 10, T, eos, 0)
    torch.manual_seed(5)
    got = _decode(model, q, m, 10, T, eos, 0)
    n = min(want.size(1), got.size(1))  # generate may add pad-only columns after every row has stopped
    assert torch.equal(got[:, :n], want[:, :n]) and bool((want[:, n:] == 0).all()) and bool((got[:, n:] == 0).all())
    if stop:
        assert bool((got == eos).any(1).any())
