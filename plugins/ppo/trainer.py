"""``PPOTrainer``: RLHF with PPO on a LoRA policy whose reference is the same model with its adapter off.

    from hfx import PPOTrainer
    from hfx_plugins.ppo import PPOConfig

    policy = hfx.apply(AutoModelForCausalLM.from_pretrained(...), "lora", r=16, target_modules=[...])
    trainer = PPOTrainer(PPOConfig(learning_rate=1e-4, batch_size=8), tokenizer, policy,
                         reward_model=reward_model, train_dataset=prompts)   # rows with "input_ids"
    trainer.train(num_updates=40)

Each update (trl 1.12.0 ``PPOTrainer.train``, ``ppo_trainer.py`` L604-949): a rollout of ``batch_size``
sampled responses (:mod:`.rollout`), the per-token rewards ``score - beta * KL`` and GAE (:mod:`.advantages`,
:mod:`.kl`), then ``num_ppo_epochs`` passes over a new shuffle in ``num_mini_batches`` mini-batches, one AdamW
step each, on ``pg_loss + vf_coef * vf_loss`` (:mod:`.losses`); the learning rate decays linearly once per
update, as trl's. What differs from trl, and why:

- the reference model is ``disable_adapters(policy)`` when no ``ref_model`` is given: no second copy;
- the default critic is a value head on the policy's trunk (``value_model="head"``): one forward gives
  logits and values; ``value_model="separate"`` takes a sequence-classification model as trl does;
- the score sits on the last real token by default (``score_position``, see :mod:`.advantages`);
- a NaN or inf score or loss stops the update before any weight changes, naming the update and the cause;
- all models stay in eval mode (dropout off, trl disables dropout too); one mini-batch is one forward
  (no micro-batching).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import get_scheduler

from hfx.data.collate import pad_rows
from hfx.errors import HfxError
from hfx.protocols import applied
from hfx_plugins.ppo.advantages import gae, masked_mean, masked_whiten, per_token_rewards, response_masks
from hfx_plugins.ppo.apply import apply as add_value_head
from hfx_plugins.ppo.apply import value_head
from hfx_plugins.ppo.config import PPOConfig
from hfx_plugins.ppo.kl import AdaptiveKLController, kl_penalty
from hfx_plugins.ppo.losses import policy_loss, value_loss
from hfx_plugins.ppo.rollout import (
    Rollout,
    build_rollout,
    forward_logprobs,
    last_token_scores,
    sample,
    value_forward,
)
from hfx_plugins.prompt_learning import check_reference

__all__ = ["Experience", "PPOTrainer", "left_pad"]


@dataclass
class Experience:
    """A rollout with its log-probs, values, rewards and advantages (all (B, T) unless noted)."""

    rollout: Rollout
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # (B,)
    kl: torch.Tensor
    rewards: torch.Tensor
    non_score_reward: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    policy_mask: torch.Tensor
    value_mask: torch.Tensor
    entropy: torch.Tensor


def left_pad(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists to (B, P) ids and a (B, P) attention mask (prompts end where responses start)."""
    return pad_rows(rows, pad_token_id, "left")  # (B, P) each


class PPOTrainer:
    """PPO for a causal LM against a reward model (trl 1.12.0's argument names and order).

    Args:
        args: :class:`~hfx_plugins.ppo.config.PPOConfig`.
        processing_class: the tokenizer (its ``eos_token_id`` is the stop token; pad may equal EOS).
        model: the policy, a causal LM; with a LoRA adapter (``hfx.apply(model, "lora", ...)``) unless
            ``ref_model`` is given.
        ref_model: an explicit reference model; None: the policy with its adapters disabled.
        reward_model: a one-label sequence-classification model (score read at the last real token), or a
            callable ``(query_responses (B, S), attention_mask (B, S), context_length) -> scores (B,)``.
        train_dataset: prompts, rows with ``input_ids`` (token ids) or ``prompt`` (text).
        value_model: with ``args.value_model="separate"``, a one-label sequence-classification model whose
            ``score`` head is read at every position (e.g. a copy of the reward model, as trl).
        optimizers: ``(optimizer, scheduler)``; None builds AdamW (eps 1e-8, no weight decay) and a linear decay
            over ``num_updates``.
        num_updates: updates the scheduler decays over (``train`` defaults to it); None: one pass over the data.

    Raises:
        HfxError: no reference (no adapter and no ``ref_model``), a missing separate value model, a
            tokenizer without EOS while ``stop_token="eos"``, or data without prompts.
    """

    def __init__(self, args: PPOConfig | None = None, processing_class: Any = None, model: nn.Module | None = None,
                 ref_model: nn.Module | None = None, reward_model: Any = None, train_dataset: Any = None,
                 value_model: nn.Module | None = None, optimizers: tuple[Any, Any] = (None, None),
                 num_updates: int | None = None) -> None:
        self.args = args = args or PPOConfig()
        if model is None or reward_model is None or processing_class is None:
            raise HfxError("PPOTrainer needs model (the policy), reward_model and processing_class (the tokenizer)")
        self.tokenizer, self.model, self.reward_model = processing_class, model, reward_model
        self.ref_model = ref_model
        if ref_model is None:
            check_reference(model, "ppo")  # a trained prompt_tuning/prefix_tuning module would stay in the reference
        if ref_model is None and not any(name == "lora" for name, _ in applied(model)):
            raise HfxError("PPOTrainer: the policy has no LoRA adapter, so it cannot serve as its own reference; apply "
                           "one (hfx.apply(model, 'lora', ...)) or pass ref_model=")
        if ref_model is model:
            raise HfxError("PPOTrainer: ref_model is the policy itself; pass a copy, or none to use the policy with its "
                           "adapters disabled")
        self.value_model = value_model
        if args.value_model == "separate" and value_model is None:
            raise HfxError("PPOTrainer: value_model='separate' needs value_model= (a one-label sequence-classification "
                           "model, e.g. a copy of the reward model); or use value_model='head'")
        if args.value_model == "head" and value_head(model) is None:
            add_value_head(model, args)
        self.stop_token_id = self._stop_token()
        self.pad_token_id = processing_class.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = processing_class.eos_token_id  # masks come from lengths: pad == eos is fine
        self.prompts = self._prompts(train_dataset) if train_dataset is not None else []
        self.num_updates = num_updates or max(1, len(self.prompts) // args.batch_size)
        for m in (model, ref_model, value_model, reward_model):
            if isinstance(m, nn.Module):
                m.eval()  # dropout off in every model, as trl's disable_dropout_in_model; gradients still flow
        if isinstance(reward_model, nn.Module):
            reward_model.requires_grad_(False)
        if ref_model is not None:
            ref_model.requires_grad_(False)
        params = [p for m in (model, value_model) if m is not None for p in m.parameters() if p.requires_grad]
        if not params:
            raise HfxError("PPOTrainer: nothing to train (no parameter of the policy or value model requires grad)")
        self.optimizer = optimizers[0] or torch.optim.AdamW(params, lr=args.learning_rate, eps=1e-8, weight_decay=0.0)
        self.scheduler = optimizers[1] or get_scheduler("linear", self.optimizer, 0, self.num_updates)
        self.params = params
        self.kl_ctl = AdaptiveKLController(args.kl_coef, args.target, args.horizon) if args.adap_kl_ctrl else None
        self.kl_coef = args.kl_coef
        self.generator = torch.Generator().manual_seed(args.seed)
        self.update_count = 0
        self.last: Experience | None = None
        self.minibatch_losses: list[dict[str, float]] = []

    def _stop_token(self) -> int | None:
        a = self.args
        if a.stop_token_id >= 0:
            return a.stop_token_id
        if a.stop_token == "none":
            return None
        if self.tokenizer.eos_token_id is None:
            raise HfxError("PPOTrainer: the tokenizer has no eos_token_id; set ppo.stop_token_id or ppo.stop_token=none")
        return int(self.tokenizer.eos_token_id)

    def _prompts(self, data: Any) -> list[list[int]]:
        rows = list(data)
        if rows and "input_ids" in rows[0]:
            return [list(r["input_ids"]) for r in rows]
        if rows and "prompt" in rows[0]:
            return [self.tokenizer(r["prompt"])["input_ids"] for r in rows]
        raise HfxError("PPOTrainer: train_dataset must have rows with 'input_ids' (token ids) or 'prompt' (text)")

    # ----------------------------------------------------------------------------------------------- rollout
    def reference(self) -> tuple[nn.Module, Any]:
        """The reference model and the context to run it in (the policy with its adapters disabled, by default)."""
        if self.ref_model is not None:
            return self.ref_model, nullcontext()
        from hfx_plugins.lora import disable_adapters

        return self.model, disable_adapters(self.model)

    def _policy_forward(self, ro: Rollout, qr: torch.Tensor, mask: torch.Tensor, entropy: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(logprobs, entropy or None, values), each (B, T), from the policy (and its value head or value model)."""
        head = self.args.value_model == "head"
        logprobs, ent, hidden = forward_logprobs(self.model, qr, mask, ro.context_length, self.args.temperature,
                                                 hidden=head, entropy=entropy)
        if head:
            values = value_head(self.model)(hidden)  # type: ignore[misc]
        else:
            values = value_forward(self.value_model, qr, mask, ro.context_length)  # type: ignore[arg-type]
        return logprobs, ent, values.float()

    @torch.no_grad()
    def make_experience(self, ro: Rollout) -> Experience:
        """Log-probs, values, score, per-token rewards, GAE advantages and returns of one rollout.

        Order of trl 1.12.0's ``PPOTrainer.train`` (``ppo_trainer.py`` L757-799): KL -> rewards (score on one
        token) -> optional reward whitening -> GAE -> advantage whitening. Every tensor of the result is (B, T),
        ``scores`` (B,).

        Raises:
            HfxError: a score that is NaN or infinite (before any weight changes), naming the response.
        """
        a = self.args
        logprobs, entropy, values = self._policy_forward(ro, ro.query_responses, ro.attention_mask)
        ref, ctx = self.reference()
        with ctx:
            ref_logprobs, _, _ = forward_logprobs(ref, ro.query_responses, ro.attention_mask, ro.context_length,
                                                  a.temperature, entropy=False)
        # The reward model reads prompt + response through its stop token; values use trl's mask (incl. eos+1).
        scores = last_token_scores(self.reward_model, ro.query_responses, ro.attention_mask, ro.context_length).float()
        bad = ~torch.isfinite(scores)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise HfxError(f"ppo: the reward model scored response {i} of update {self.update_count + 1} as "
                           f"{scores[i].item()}; check the reward model (no weight was changed by this update)")
        if self.stop_token_id is not None and a.missing_eos_penalty:
            scores = scores - a.missing_eos_penalty * (~ro.contains_stop).float()
        policy_mask, value_mask = response_masks(ro.seq_lengths, ro.responses.size(1), a.score_position)
        values = values.masked_fill(~value_mask, 0.0)
        kl = kl_penalty(logprobs, ref_logprobs, a.kl_estimator).masked_fill(~policy_mask, 0.0)
        rewards, non_score = per_token_rewards(kl, scores, ro.seq_lengths, self.kl_coef, policy_mask, a.score_position)
        if a.whiten_rewards:
            rewards = masked_whiten(rewards, value_mask, shift_mean=False).masked_fill(~value_mask, 0.0)
        advantages, returns = gae(rewards, values, a.gamma, a.lam)
        if a.whiten_advantages:
            advantages = masked_whiten(advantages, policy_mask)
        advantages = advantages.masked_fill(~policy_mask, 0.0)
        return Experience(ro, logprobs, ref_logprobs, values, scores, kl, rewards, non_score, advantages, returns,
                          policy_mask, value_mask, entropy)

    # ------------------------------------------------------------------------------------------------ update
    def _finite(self, name: str, value: torch.Tensor, epoch: int, start: int) -> None:
        if not torch.isfinite(value):
            raise HfxError(f"ppo: the {name} is {value.item()} at update {self.update_count + 1} (epoch {epoch + 1}, "
                           f"mini-batch from rollout {start}); stopped before the optimizer step, weights are those "
                           "of the previous step (the last checkpoint is intact); lower the learning rate")

    def optimize(self, exp: Experience) -> dict[str, float]:
        """``num_ppo_epochs`` x ``num_mini_batches`` AdamW steps on one experience; return mean statistics.

        Each epoch reshuffles the B rollouts and takes B / ``num_mini_batches`` of them per step; the loss is
        ``pg_loss + vf_coef * vf_loss``. The learning rate then decays once (trl's scheduler steps per update).

        Raises:
            HfxError: a NaN or infinite loss, before that step's optimizer update (update, epoch, mini-batch named).
        """
        a, ro = self.args, exp.rollout
        n = ro.responses.size(0)
        size = n // a.num_mini_batches
        sums: dict[str, float] = {}
        self.minibatch_losses = []
        for epoch in range(a.num_ppo_epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, size):
                i = order[start:start + size]
                logprobs, _, vpred = self._policy_forward(ro, ro.query_responses[i], ro.attention_mask[i], entropy=False)
                pg, pg_stats = policy_loss(logprobs, exp.logprobs[i], exp.advantages[i], exp.policy_mask[i], a.cliprange)
                vf, vf_stats = value_loss(vpred, exp.values[i], exp.returns[i], exp.value_mask[i], a.cliprange_value)
                loss = pg + a.vf_coef * vf
                self._finite("loss", loss, epoch, start)
                loss.backward()
                if a.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, a.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                row = {"pg_loss": pg.item(), "vf_loss": vf.item(), "loss": loss.item(),
                       **{k: v.item() for k, v in {**pg_stats, **vf_stats}.items()}}
                self.minibatch_losses.append(row)
                for k, v in row.items():
                    sums[k] = sums.get(k, 0.0) + v
        self.scheduler.step()
        return {k: v / len(self.minibatch_losses) for k, v in sums.items()}

    def step(self, queries: torch.Tensor, query_mask: torch.Tensor, responses: torch.Tensor | None = None
             ) -> dict[str, float]:
        """One PPO update on (B, P) left-padded prompts: sample (or take ``responses`` (B, T)), score, optimise.

        Returns the update's statistics with trl's meanings: ``score`` (mean proxy reward), ``kl`` (mean over
        responses of the summed per-token KL), ``entropy`` (mean per valid token), ``clipfrac``, losses, ...
        """
        a = self.args
        device = next(self.model.parameters()).device
        queries, query_mask = queries.to(device), query_mask.to(device)
        if responses is None:
            ro = sample(self.model, queries, query_mask, a.response_length, a.temperature, self.stop_token_id,
                        self.pad_token_id)
        else:
            ro = build_rollout(queries, query_mask, responses.to(device), self.stop_token_id, self.pad_token_id)
        exp = self.make_experience(ro)
        self.last = exp
        stats = self.optimize(exp)
        kl_sum = exp.kl.sum(1).mean().item()
        out = {"score": exp.scores.mean().item(), "kl": kl_sum, "kl_coef": self.kl_coef,
               "non_score_reward": exp.non_score_reward.sum(1).mean().item(),
               "entropy": masked_mean(exp.entropy, exp.policy_mask).item(),
               "response_length": (exp.rollout.seq_lengths + 1).float().mean().item(),
               "eos_fraction": exp.rollout.contains_stop.float().mean().item(), "lr": self.scheduler.get_last_lr()[0],
               **stats}
        if self.kl_ctl is not None:
            self.kl_coef = self.kl_ctl.update(kl_sum, exp.rollout.responses.size(0))
        self.update_count += 1
        return out

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless left-padded prompt batches, reshuffled each pass (drop_last, as trl's loader)."""
        if len(self.prompts) < self.args.batch_size:
            raise HfxError(f"PPOTrainer: {len(self.prompts)} prompts, fewer than one batch of {self.args.batch_size}")
        while True:
            order = torch.randperm(len(self.prompts), generator=self.generator).tolist()
            for s in range(0, len(order) - self.args.batch_size + 1, self.args.batch_size):
                yield left_pad([self.prompts[j] for j in order[s:s + self.args.batch_size]], self.pad_token_id)

    def train(self, num_updates: int | None = None,
              callback: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Run ``num_updates`` updates (default: the scheduler's); ``callback(update, stats)`` after each."""
        history = []
        batches = self.batches()
        for _ in range(num_updates or self.num_updates):
            stats = self.step(*next(batches))
            if not all(math.isfinite(v) for v in stats.values()):
                raise HfxError(f"ppo: non-finite statistics at update {self.update_count}: {stats}")
            history.append(stats)
            if callback is not None:
                callback(self.update_count, stats)
        return history
