"""Rollouts: sample responses that stop at the stop token, then score them, without gradients.

Order of operations (trl 1.12.0 ``ppo_trainer.py`` L672-753, with the departures noted):

1. sample ``response_length`` tokens per left-padded prompt from exactly softmax(logits / ``temperature``),
   whatever the model's own ``generation_config`` holds (transformers 5's ``generate`` would take its
   ``min_p``, ``suppress_tokens``, EOS, ... for every field left unset), by a KV-cached loop that makes the
   same draws as ``generate(do_sample=True)`` with the same seed, ``generate`` itself for models with input
   hooks; generation stops at the stop token, and with none every position is sampled (trl 1.12.0 only
   stops when ``stop_token="eos"`` is set; its default runs every response to ``response_length``);
2. cut each response after its first stop token: ``seq_lengths`` is the index of that token (kept), or
   T - 1 when there is none; every later position is padding. Masks are built from these lengths, not by
   comparing ids with the pad id, so ``pad_token_id == eos_token_id`` works (trl requires pad != eos);
3. log-probs of the sampled tokens under the policy and the reference from one forward pass each, with the
   logits divided by the **same temperature** the tokens were sampled at (trl takes the policy's from
   ``generate``'s scores, already divided; recomputing them makes the rollout's log-probs identical to the
   training forward's, so the first ratio of each update is exactly 1). Both are the distributions the
   KL is meant to compare, so a mismatch between sampling and scoring cannot turn the KL negative;
4. values per position, and the reward model's score at each response's last real token.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig

from hfx.pooling import gather_last

__all__ = ["Rollout", "forward_logprobs", "generate_responses", "last_token_scores", "neutral_generation_config",
           "sample", "sequence_lengths", "value_forward"]


@dataclass
class Rollout:
    """One batch of sampled responses and everything PPO needs about them (no gradients).

    Shapes: B responses, P prompt positions (left-padded), T = response_length.
    """

    query_responses: torch.Tensor  # (B, P + T) prompt ids then response ids (padding after the stop token)
    attention_mask: torch.Tensor  # (B, P + T) 1 on real tokens (prompt and response through its stop token)
    context_length: int  # P
    responses: torch.Tensor  # (B, T)
    seq_lengths: torch.Tensor  # (B,) index of each response's last real token
    contains_stop: torch.Tensor  # (B,) bool, the response has its stop token


def sequence_lengths(responses: torch.Tensor, stop_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) index of the first stop token of each response (T - 1 without one), and (B,) whether it has one.

    Args:
        responses: (B, T) sampled token ids (whatever follows the stop token is ignored).
        stop_token_id: the stop token, or None (every response runs to T).
    """
    length = responses.size(1)
    if stop_token_id is None:
        return torch.full_like(responses[:, 0], length - 1), torch.zeros_like(responses[:, 0], dtype=torch.bool)
    is_stop = responses == stop_token_id  # (B, T)
    idx = torch.arange(length, device=responses.device).expand_as(responses)
    first = torch.where(is_stop, idx, torch.full_like(idx, length)).min(dim=1).values  # (B,) T when none
    has = first < length
    return torch.where(has, first, torch.full_like(first, length - 1)), has


def build_rollout(queries: torch.Tensor, query_mask: torch.Tensor, responses: torch.Tensor,
                  stop_token_id: int | None, pad_token_id: int) -> Rollout:
    """Cut ``responses`` (B, T) after their stop token, pad the rest, and join them to the prompts (B, P)."""
    seq_lengths, has = sequence_lengths(responses, stop_token_id)
    idx = torch.arange(responses.size(1), device=responses.device).unsqueeze(0)
    valid = idx <= seq_lengths.unsqueeze(1)  # (B, T)
    responses = responses.masked_fill(~valid, pad_token_id)
    return Rollout(torch.cat([queries, responses], 1), torch.cat([query_mask.bool(), valid], 1), queries.size(1),
                   responses, seq_lengths, has)


@torch.no_grad()
def sample(policy: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, response_length: int,
           temperature: float, stop_token_id: int | None, pad_token_id: int) -> Rollout:
    """Sample one response per left-padded prompt at ``temperature`` (no top-k/top-p) and build the rollout.

    Each token is drawn from exactly softmax(logits / temperature), the distribution ``forward_logprobs``
    scores, whatever the model's own ``generation_config`` holds (:func:`neutral_generation_config`); with
    ``stop_token_id=None`` every one of the T positions is sampled (the model's EOS does not stop it), so no
    pad fill is ever taken for a sampled action.

    Args:
        policy: the causal LM (with its adapter active).
        queries: (B, P) left-padded prompt ids.
        query_mask: (B, P) 1 on real prompt tokens.
        response_length: T, most tokens sampled.
        temperature: the logits are divided by it before sampling.
        stop_token_id: generation stops there (None: always T tokens).
        pad_token_id: fills finished rows (may equal the stop token).
    """
    decode = _decode if _plain_decoder(policy) else generate_responses
    responses = decode(policy, queries, query_mask, response_length, temperature, stop_token_id, pad_token_id)
    if responses.size(1) < response_length:  # every row stopped early: pad to T
        fill = responses.new_full((responses.size(0), response_length - responses.size(1)), pad_token_id)
        responses = torch.cat([responses, fill], 1)
    return build_rollout(queries, query_mask, responses, stop_token_id, pad_token_id)


def generate_responses(policy: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, response_length: int,
                       temperature: float, stop_token_id: int | None, pad_token_id: int) -> torch.Tensor:
    """(B, <= T) response ids from transformers' ``generate`` (``do_sample``, only the temperature applied).

    The sampler of :func:`sample` for models :func:`_decode` does not take (hooks that change the inputs, such as
    prompt or prefix tuning's; models without ``logits_to_keep``), and its reference in the tests.
    """
    gen = GenerationConfig(
        max_new_tokens=response_length, min_new_tokens=0, do_sample=True, temperature=temperature, top_k=0,
        top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=stop_token_id,
        pad_token_id=pad_token_id, use_cache=True,
    )
    with neutral_generation_config(policy):
        out = policy.generate(input_ids=queries, attention_mask=query_mask, generation_config=gen)
    return out[:, queries.size(1):]  # (B, <= T)


def _plain_decoder(model: nn.Module) -> bool:
    """Whether :func:`_decode` reproduces ``generate`` for ``model``: a decoder-only transformers model that takes
    ``logits_to_keep`` and a cache, with no forward hooks on it (prompt and prefix tuning's change the inputs)."""
    params = inspect.signature(model.forward).parameters
    return (not getattr(getattr(model, "config", None), "is_encoder_decoder", True) and "logits_to_keep" in params
            and ("cache" in params or "past_key_values" in params) and not model._forward_pre_hooks
            and not model._forward_hooks)


def _decode(model: nn.Module, queries: torch.Tensor, query_mask: torch.Tensor, response_length: int,
            temperature: float, stop_token_id: int | None, pad_token_id: int) -> torch.Tensor:
    """(B, <= T) response ids drawn token by token from softmax(logits / temperature), with a KV cache.

    The same forward calls and the same random draws as transformers' ``generate(do_sample=True)`` with only
    the temperature (``GenerationMixin._sample``: the float32 logits of the last position, divided by the
    temperature, softmax, one ``torch.multinomial`` over the batch per step; finished rows get ``pad_token_id``;
    it stops when every row has its stop token), so the same seed gives the same tokens (tested). It is used
    for what it leaves out: ``generate``'s merging of the model's ``generation_config`` and its logits
    processors, so the distribution is softmax(logits / T) by construction. It is not faster: sampling CPU
    seconds loop / generate 0.83 and 0.98 in two PPO updates, 1.04 and 1.12 in two GRPO updates on smollm2
    (``benchmarks/results/rollout_speed.md``)."""
    from transformers import DynamicCache

    b = queries.size(0)
    cache = DynamicCache(config=model.config)
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    mask = query_mask.long()  # (B, P), grows by one column a step
    positions = mask.cumsum(-1) - 1  # (B, P) as generate's prepare_inputs_for_generation
    positions.masked_fill_(mask == 0, 1)
    out = model(input_ids=queries, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **{key: cache})
    position = positions[:, -1:]  # (B, 1)
    unfinished = torch.ones(b, dtype=torch.long, device=queries.device)
    tokens = []
    for step in range(response_length):
        logits = out.logits[:, -1].to(copy=True, dtype=torch.float32)  # (B, V)
        probs = torch.softmax(logits / temperature, dim=-1)
        nxt = torch.multinomial(probs, num_samples=1).squeeze(1)  # (B,)
        nxt = nxt * unfinished + pad_token_id * (1 - unfinished)
        tokens.append(nxt)
        if stop_token_id is not None:
            unfinished = unfinished & (nxt != stop_token_id).long()
            if unfinished.max() == 0:
                break
        if step == response_length - 1:
            break
        mask = torch.cat([mask, mask.new_ones(b, 1)], 1)  # (B, P + step + 1)
        position = position + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                    logits_to_keep=1, **{key: cache})
    return torch.stack(tokens, 1)  # (B, <= T)


@contextmanager
def neutral_generation_config(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``generation_config`` of ``model`` and its submodules is transformers' default.

    transformers 5's ``generate`` fills every field that the passed ``GenerationConfig`` leaves unset (None)
    from the model's own ``generation_config`` (``_prepare_generation_config``: ``min_p``, ``typical_p``,
    ``epsilon_cutoff``, ``suppress_tokens``, ``bad_words_ids``, ``sequence_bias``, ``eos_token_id``, ...), and
    several of those cannot be switched off by a value in the passed config (None means "take the model's").
    The log-probs hfx trains on are plain softmax(logits / T), so sampling must be too: the model's own config
    is replaced by a default one for the call (the passed config then holds every setting), and put back after,
    even on an error. trl 1.16 samples with the model's fields and scores without them.
    """
    saved = []
    for module in model.modules():
        if isinstance(getattr(module, "generation_config", None), GenerationConfig):
            saved.append((module, module.generation_config))
    try:
        for module, _ in saved:
            module.generation_config = GenerationConfig()
        yield
    finally:
        for module, config in saved:
            module.generation_config = config


def _inputs(query_responses: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """trl's ``forward`` inputs: masked ids set to 0, positions counted over real tokens (``utils.py``)."""
    mask = attention_mask.long()
    return {"input_ids": query_responses.masked_fill(~attention_mask.bool(), 0), "attention_mask": mask,
            "position_ids": mask.cumsum(1) - mask}


def forward_logprobs(model: nn.Module, query_responses: torch.Tensor, attention_mask: torch.Tensor,
                     context_length: int, temperature: float, hidden: bool = False, entropy: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-probs of the response tokens under ``model`` at ``temperature``, and the per-token entropy.

    Args:
        model: a causal LM.
        query_responses: (B, P + T) ids.
        attention_mask: (B, P + T) real tokens.
        context_length: P.
        temperature: the logits are divided by it (the sampling distribution).
        hidden: also return the last hidden states of the response-predicting positions (for a value head).
        entropy: compute the entropy (a statistic only: the reference and the training forward skip it, which
            saves a pass over the (B, T, V) probabilities).

    Returns:
        ``(logprobs (B, T), entropy (B, T) or None, hidden (B, T, H) or None)``.
    """
    keep = query_responses.size(1) - context_length + 1  # T + 1: the positions that predict response tokens
    # The LM head (V = 49,152 outputs for smollm2) runs on those positions only, as trl's ``forward`` does not:
    # same values, ~14% less compute per PPO forward and backward on smollm2 with ~45-token prompts.
    extra = {"logits_to_keep": keep} if _takes_logits_to_keep(model) else {}
    out = model(**_inputs(query_responses, attention_mask), output_hidden_states=hidden, use_cache=False, **extra)
    logits = out.logits[:, -keep:-1] / temperature  # (B, T, V): position t predicts token t + 1
    logp = torch.log_softmax(logits.float(), dim=-1)
    responses = query_responses[:, context_length:]  # (B, T)
    logprobs = torch.gather(logp, 2, responses.unsqueeze(-1)).squeeze(-1)
    ent = None
    if entropy:  # a statistic: no graph through it (it would hold two more (B, T, V) tensors until the step ends)
        with torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1)  # (B, T) nats
    h = out.hidden_states[-1][:, context_length - 1:-1] if hidden else None
    return logprobs, ent, h


def _takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model.forward`` accepts transformers' ``logits_to_keep`` (most causal LMs of transformers 5)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _trunk_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer trunk and the one-output ``score`` head of a sequence-classification model (trl's contract)."""
    return getattr(model, model.base_model_prefix), model.score


def value_forward(value_model: nn.Module, query_responses: torch.Tensor, attention_mask: torch.Tensor,
                  context_length: int) -> torch.Tensor:
    """(B, T) values of a separate value model (score head on every position, as trl's ``get_reward``)."""
    trunk, head = _trunk_and_head(value_model)
    out = trunk(**_inputs(query_responses, attention_mask), output_hidden_states=True, use_cache=False)
    return head(out.hidden_states[-1]).squeeze(-1)[:, context_length - 1:-1]


def last_token_scores(reward_model: Any, query_responses: torch.Tensor, attention_mask: torch.Tensor,
                      context_length: int) -> torch.Tensor:
    """(B,) reward-model score of each prompt + response, read at its last real token.

    ``reward_model`` is one of:

    - a transformers one-label sequence-classification model: its ``score`` head is applied to the hidden state
      of the last real token of ``attention_mask`` (trl's ``get_reward`` applies it at every position and reads
      that one: the same value for a per-position head, whatever the pad id);
    - any other module called as ``model(input_ids, attention_mask, position_ids)`` whose ``logits`` (B, 1) are
      read at the last real token (the reward plugin's ``RewardModel``);
    - a callable ``(query_responses (B, S), attention_mask (B, S), context_length) -> (B,)`` (e.g. the gold score).
    """
    if not isinstance(reward_model, nn.Module):
        return torch.as_tensor(reward_model(query_responses, attention_mask, context_length), dtype=torch.float32)
    if not (hasattr(reward_model, "base_model_prefix") and hasattr(reward_model, "score")):
        out = reward_model(**_inputs(query_responses, attention_mask))
        return getattr(out, "logits", out).reshape(-1).float()
    trunk, head = _trunk_and_head(reward_model)
    out = trunk(**_inputs(query_responses, attention_mask), output_hidden_states=True, use_cache=False)
    last = gather_last(out.hidden_states[-1], attention_mask)  # (B, H) rightmost real token, whatever the pad id
    return head(last).squeeze(-1)  # (B,)
