"""``GRPOTrainer``: GRPO and RLOO on a LoRA policy whose reference is the same model with its adapter off.

    from hfx import GRPOTrainer
    from hfx_plugins.grpo import GRPOConfig

    policy = hfx.apply(AutoModelForCausalLM.from_pretrained(...), "lora", r=16, target_modules=[...])
    trainer = GRPOTrainer(GRPOConfig(learning_rate=5e-4, num_generations=4, batch_size=16), tokenizer, policy,
                          reward_model=reward_model, train_dataset=prompts)   # rows with "input_ids" or "prompt"
    trainer.train(num_updates=16)                      # GRPOConfig(estimator="rloo"): trl's RLOOTrainer

One update (trl 1.16 ``GRPOTrainer`` / ``RLOOTrainer``): ``batch_size x steps_per_generation / G`` prompts, each
sampled G times in a row (ppo's sampler: EOS stops, masks from lengths, log-probs at the sampling temperature);
one reward each (the reward model, ppo's ``last_token_scores``); group advantages (:mod:`.advantages`); then
``num_iterations`` passes over the generation batch, split (shuffled) into ``steps_per_generation`` optimizer
steps on the clipped surrogate (:mod:`.losses`). The reference is the policy inside ``disable_adapters`` (trl
does the same for a peft policy). Departures from trl: prompts are scored with positions counted over real
tokens (trl 1.16's forward passes no ``position_ids``, so a left-padded prompt is read at shifted positions
when scored, not when sampled); the reference's log-probs are always computed, for the reported KL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from transformers import get_scheduler

from hfx.errors import HfxError
from hfx.protocols import applied
from hfx_plugins.grpo.advantages import group_advantages
from hfx_plugins.grpo.config import GRPOConfig, check_groups
from hfx_plugins.grpo.losses import grpo_loss, rloo_loss, sequence_kl
from hfx_plugins.lora import disable_adapters
from hfx_plugins.ppo import build_rollout, forward_logprobs, last_token_scores, left_pad, sample
from hfx_plugins.prompt_learning import check_reference

__all__ = ["GRPOTrainer"]


class GRPOTrainer:
    """GRPO (``estimator="grpo"``) or RLOO (``"rloo"``) for a LoRA causal LM against a reward model.

    Args:
        args: :class:`~hfx_plugins.grpo.config.GRPOConfig`.
        processing_class: the tokenizer (its EOS ends a completion; pad may equal EOS).
        model: the policy, with a LoRA adapter (``hfx.apply(model, "lora", ...)``): the reference is the same
            model with the adapter disabled.
        reward_model: a one-label sequence-classification model (score read at the last real token), or a
            callable ``(query_responses (B, S), attention_mask (B, S), context_length) -> scores (B,)``.
        train_dataset: prompts, rows with ``input_ids`` (token ids) or ``prompt`` (text).
        optimizers: ``(optimizer, scheduler)``; None builds AdamW (transformers' defaults: eps 1e-8, no weight
            decay) and a linear decay over the optimizer steps of ``num_updates`` updates (transformers').
        num_updates: updates the scheduler decays over (``train`` defaults to it); None: one pass over the data.

    Raises:
        HfxError: a policy without a LoRA adapter, a missing reward model or tokenizer, a tokenizer without EOS,
            or data without prompts.
    """

    def __init__(self, args: GRPOConfig | None = None, processing_class: Any = None, model: nn.Module | None = None,
                 reward_model: Any = None, train_dataset: Any = None, optimizers: tuple[Any, Any] = (None, None),
                 num_updates: int | None = None) -> None:
        self.args = a = args or GRPOConfig()
        if model is None or reward_model is None or processing_class is None:
            raise HfxError("GRPOTrainer needs model (the policy), reward_model and processing_class (the tokenizer)")
        check_reference(model, "grpo")  # a trained prompt_tuning/prefix_tuning module would stay in the reference
        if not any(name == "lora" for name, _ in applied(model)):
            raise HfxError("GRPOTrainer: the policy has no LoRA adapter, so it cannot serve as its own reference; "
                           "apply one first: hfx.apply(model, 'lora', ...)")
        if processing_class.eos_token_id is None:
            raise HfxError("GRPOTrainer: the tokenizer has no eos_token_id (a completion ends at EOS)")
        self.tokenizer, self.model, self.reward_model = processing_class, model, reward_model
        self.stop_token_id = int(processing_class.eos_token_id)
        pad = processing_class.pad_token_id
        self.pad_token_id = self.stop_token_id if pad is None else int(pad)  # masks come from lengths
        self.prompts = self._prompts(train_dataset) if train_dataset is not None else []
        self.prompts_per_update = a.batch_size * a.steps_per_generation // a.num_generations
        self.num_updates = num_updates or max(1, len(self.prompts) // self.prompts_per_update)
        for m in (model, reward_model):
            if isinstance(m, nn.Module):
                m.eval()  # dropout off (trl's disable_dropout), so policy and reference are one network
        if isinstance(reward_model, nn.Module):
            reward_model.requires_grad_(False)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise HfxError("GRPOTrainer: nothing to train (no parameter of the policy requires grad)")
        self.optimizer = optimizers[0] or torch.optim.AdamW(self.params, lr=a.learning_rate, eps=1e-8, weight_decay=0.0)
        steps = self.num_updates * a.steps_per_generation * a.num_iterations
        self.scheduler = optimizers[1] or get_scheduler("linear", self.optimizer, 0, steps)
        self.generator = torch.Generator().manual_seed(a.seed)
        self.update_count = 0
        self.last: dict[str, Any] = {}
        self.step_losses: list[float] = []

    def _prompts(self, data: Any) -> list[list[int]]:
        rows = list(data)
        if not all("input_ids" in r or "prompt" in r for r in rows):
            raise HfxError("GRPOTrainer: train_dataset must have rows with 'input_ids' (token ids) or 'prompt' (text)")
        return [list(r["input_ids"]) if "input_ids" in r else self.tokenizer(r["prompt"])["input_ids"] for r in rows]

    def reference(self) -> tuple[nn.Module, Any]:
        """The reference and the context to run it in: the policy inside ``disable_adapters`` (ppo's contract)."""
        return self.model, disable_adapters(self.model)

    def _logps(self, qr: torch.Tensor, am: torch.Tensor, ctx: int, entropy: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logps, ent, _ = forward_logprobs(self.model, qr, am, ctx, self.args.temperature, entropy=entropy)
        return logps, ent

    def step(self, prompts: list[list[int]], responses: torch.Tensor | None = None) -> dict[str, float]:
        """One update: each prompt sampled G times in a row (or ``responses`` (N, T) given), scored, optimised.

        Args:
            prompts: token ids of N / G prompts.
            responses: (N, T) completion ids to use instead of sampling (cut after their first EOS), N = G x prompts.

        Returns:
            ``reward`` (mean score), ``reward_std``, ``kl`` (mean summed k1 to the reference per completion),
            ``entropy``, ``clip_ratio``, ``loss``, ``completion_length``, ``eos_fraction``, ``lr``.

        Raises:
            HfxError: prompts that do not fill whole groups, or a NaN / infinite score or loss (before that step's
                weights change).
        """
        a, g = self.args, self.args.num_generations
        check_groups(len(prompts) * g, g)
        device = next(self.model.parameters()).device
        q, m = left_pad([p for p in prompts for _ in range(g)], self.pad_token_id)  # (N, P): trl's order
        q, m = q.to(device), m.to(device)
        if responses is None:
            ro = sample(self.model, q, m, a.max_completion_length, a.temperature, self.stop_token_id, self.pad_token_id)
        else:
            ro = build_rollout(q, m, responses.to(device), self.stop_token_id, self.pad_token_id)
        qr, am, ctx = ro.query_responses, ro.attention_mask, ro.context_length
        mask = am[:, ctx:]  # (N, T) through the first EOS
        if a.mask_truncated_completions:
            mask = mask & ro.contains_stop.unsqueeze(1)
        n = qr.size(0)
        if n % a.batch_size:
            raise HfxError(f"grpo: {n} completions do not split into optimizer steps of batch_size={a.batch_size}")
        with torch.no_grad():
            scores = last_token_scores(self.reward_model, qr, am, ctx).float()  # (N,)
            if not torch.isfinite(scores).all():
                i = int((~torch.isfinite(scores)).nonzero()[0])
                raise HfxError(f"grpo: the reward model scored completion {i} of update {self.update_count + 1} as "
                               f"{scores[i].item()}; check the reward model (no weight was changed by this update)")
            keep_old = a.estimator == "rloo" or a.num_iterations > 1 or n > a.batch_size
            old = self._logps(qr, am, ctx)[0] if keep_old else None  # else ratio 1: the step's own, detached (trl)
            with disable_adapters(self.model):
                ref = self._logps(qr, am, ctx)[0]
            rewards = scores
            if a.estimator == "rloo" and a.beta:
                rewards = scores - a.beta * sequence_kl(old, ref, mask)  # trl RLOO: the KL is in the reward
            adv = group_advantages(rewards, g, a.estimator, a.scale_rewards, a.normalize_advantages)  # (N,)
        order = torch.randperm(n, generator=self.generator) if n > a.batch_size else torch.arange(n)
        num_items = mask.sum().item() / (n // a.batch_size)  # dapo: the generation batch's tokens per step (trl)
        rows, now = [], torch.zeros_like(ref)
        for it in range(a.num_iterations):
            for s in range(0, n, a.batch_size):
                i = order[s:s + a.batch_size].to(device)
                logps, ent = self._logps(qr[i], am[i], ctx, entropy=it == 0)
                if it == 0:
                    now[i] = logps.detach()
                before = old[i] if old is not None else logps.detach()
                if a.estimator == "rloo":
                    loss, _, st = rloo_loss(logps, before, adv[i], mask[i], a.epsilon, a.clip_high)
                else:
                    loss, _, st = grpo_loss(logps, before, adv[i], mask[i], a.epsilon, a.clip_high, a.loss_type,
                                            a.beta, ref[i], a.max_completion_length, num_items,
                                            a.use_bias_correction_kl)
                if not torch.isfinite(loss):
                    raise HfxError(f"grpo: the loss is {loss.item()} at update {self.update_count + 1} (pass {it + 1}, "
                                   f"step from completion {s}); stopped before the optimizer step; lower the learning rate")
                loss.backward()
                if a.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, a.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
                row = {"loss": loss.item(), "clip_ratio": st["clip_ratio"].item()}
                if ent is not None:
                    row["entropy"] = ((ent * mask[i]).sum() / mask[i].sum().clamp(min=1)).item()
                rows.append(row)
        self.update_count += 1
        self.step_losses = [r["loss"] for r in rows]  # one per optimizer step, in order
        self.last = {"rollout": ro, "scores": scores, "rewards": rewards, "advantages": adv, "mask": mask, "ref": ref,
                     "old": old if old is not None else now}
        kl = sequence_kl(self.last["old"], ref, mask)  # (N,) k1 summed over each completion
        means = {k: sum(r[k] for r in rows if k in r) / max(1, sum(k in r for r in rows))
                 for k in ("entropy", "clip_ratio", "loss")}  # over the optimizer steps (entropy: the first pass)
        return {"reward": scores.mean().item(), "reward_std": scores.std().item(), "kl": kl.mean().item(), **means,
                "completion_length": (ro.seq_lengths + 1).float().mean().item(),
                "eos_fraction": ro.contains_stop.float().mean().item(), "lr": self.scheduler.get_last_lr()[0]}

    def batches(self) -> Iterator[list[list[int]]]:
        """Endless lists of ``batch_size x steps_per_generation / G`` prompts, reshuffled each pass (drop_last)."""
        k = self.prompts_per_update
        if len(self.prompts) < k:
            raise HfxError(f"GRPOTrainer: {len(self.prompts)} prompts, fewer than one update's {k}")
        while True:
            order = torch.randperm(len(self.prompts), generator=self.generator).tolist()
            for s in range(0, len(order) - k + 1, k):
                yield [self.prompts[j] for j in order[s:s + k]]

    def train(self, num_updates: int | None = None,
              callback: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Run ``num_updates`` updates (default: the scheduler's); ``callback(update, stats)`` after each."""
        history = []
        batches = self.batches()
        for _ in range(num_updates or self.num_updates):
            stats = self.step(next(batches))
            if not all(math.isfinite(v) for v in stats.values()):
                raise HfxError(f"grpo: non-finite statistics at update {self.update_count}: {stats}")
            history.append(stats)
            if callback is not None:
                callback(self.update_count, stats)
        return history
