"""``hfx run plugin=ppo``: RLHF from rankings: a reward model, then PPO on a LoRA policy, judged by VADER.

One linear script. With no other argument:

1. the reward model: ``ppo.reward_model`` (a folder written by ``hfx.save`` of the reward plugin), else the
   one cached under ``$HFX_CACHE/ppo/``, else one trained now with ``hfx run plugin=reward`` (the reward
   plugin's defaults: smollm2-135m on the bundled rankings) and cached; ``ppo.reward_model=vader`` uses the
   gold score itself (an oracle run);
2. the policy: ``smollm2-135m`` with a LoRA adapter and a value head (the reference is the same model with the
   adapter disabled); prompts: the ``prompt`` column of the rankings' train split (its chat-formatted text);
3. before and after: ``eval_samples`` answers per held-out prompt (the test split), sampled at
   ``ppo.temperature`` with a fixed seed, scored by VADER (gold), by the reward model (proxy), and their KL
   to the reference; per update: proxy reward, gold score, KL, entropy and clip fraction.

Writes ``ppo_curves.png`` (run folder), ``artifacts/answers.json`` (held-out answers before/after) and
``artifacts/policy`` (``hfx.save``: the LoRA adapter in peft's format and the value head).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

import hfx
from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json
from hfx.metrics import mean, proportion
from hfx.registry import Recipe
from hfx.runner.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from hfx_plugins.ppo.gold import response_texts, vader_scores
from hfx_plugins.ppo.heldout import held_out_rollouts
from hfx_plugins.ppo.plots import plot_ppo_curves, print_answers
from hfx_plugins.ppo.rewards import load_prompts, reward_model_for
from hfx_plugins.ppo.rollout import last_token_scores
from hfx_plugins.ppo.trainer import PPOTrainer

__all__ = ["PPORecipe"]


class PPORecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save."""

    def setup(self) -> None:
        """Build the policy (lora, then the value head), the prompts, the reward model and the trainer.

        Raises:
            HfxError: no ``lora`` plugin in the run (a preset or config file without a ``lora:`` section), bad
                prompts (:func:`~hfx_plugins.ppo.rewards.load_prompts`) or reward model
                (:func:`~hfx_plugins.ppo.rewards.reward_model_for`).
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = cfg = ctx.config("ppo")
        if "lora" not in [p.name for p in ctx.plugins]:  # a preset or --config file without a lora: section
            raise HfxError("ppo trains a LoRA policy: give it a lora: section (ppo's default preset has one) or "
                           "run plugin=[lora,ppo]")
        policy, self.tok = ctx.load_model("causal-lm")
        self.policy = ctx.apply_plugins(policy)  # lora (lora.r, lora.lora_alpha, ...), then ppo's value head
        self.train_prompts, self.eval_prompts = load_prompts(self.tok, cfg, ctx.print)
        self.reward = reward_model_for(cfg.reward_model, self.tok, ctx)
        self.trainer = PPOTrainer(cfg, self.tok, self.policy, reward_model=self.reward,
                                  train_dataset=[{"input_ids": p} for p in self.train_prompts], num_updates=cfg.updates)
        n_train = sum(p.numel() for p in self.policy.parameters() if p.requires_grad)
        ctx.print(f"ppo: policy {run.model} + LoRA r={ctx.config('lora').r} + value head ({n_train:,} trainable "
                  f"parameters); "
                  f"{len(self.train_prompts)} train / {len(self.eval_prompts)} held-out prompts; {cfg.updates} updates "
                  f"of {cfg.batch_size} rollouts x {cfg.num_ppo_epochs} epochs x {cfg.num_mini_batches} mini-batches")
        self.answers: dict[str, list[list[str]]] = {}
        self.training_started = False
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Gold (VADER), proxy reward and KL to the reference on the held-out prompts, sampled with a fixed seed."""
        cfg, tr = self.cfg, self.trainer
        texts, gold, proxy, kls = [], [], [], []
        for ro, kl in held_out_rollouts(self.policy, tr.reference, self.eval_prompts, cfg.eval_samples,
                                        cfg.response_length, cfg.temperature, tr.stop_token_id, tr.pad_token_id,
                                        seed=self.ctx.run.seed + 1_000_003):
            got = response_texts(self.tok, ro.query_responses, ro.attention_mask, ro.context_length)
            texts += got
            gold += vader_scores(got)
            proxy += last_token_scores(self.reward, ro.query_responses, ro.attention_mask, ro.context_length).tolist()
            kls += kl
        key = "after" if self.training_started else "before"  # train.eval_before=false: no "before" answers
        self.answers[key] = [texts[i:i + cfg.eval_samples] for i in range(0, len(texts), cfg.eval_samples)]
        # gold and positive_share carry n and a 95% CI (hfx.metrics.Estimate; the same numbers). The answers to
        # one prompt are not independent: gold's t interval is over the per-prompt means (n = prompts; their
        # mean is the same number, every prompt having eval_samples answers); positive_share's counts answers
        per_prompt = [statistics.fmean(gold[i:i + cfg.eval_samples]) for i in range(0, len(gold), cfg.eval_samples)]
        return {"gold": mean(per_prompt, statistics.fmean(gold)) if len(per_prompt) > 1 else statistics.fmean(gold),
                "gold_std": statistics.pstdev(gold),
                "proxy_reward": statistics.fmean(proxy), "kl": statistics.fmean(kls),
                "positive_share": proportion(sum(g > 0.05 for g in gold) / len(gold), len(gold))}

    def train(self) -> dict[str, float]:
        """Run ``ppo.updates`` PPO updates (resuming from the last checkpoint); log and print each.

        Returns:
            The means of proxy reward, gold score and KL over the last 5 updates (``train_proxy_reward``, ...).
        """
        ctx, cfg, tr = self.ctx, self.cfg, self.trainer
        self.training_started = True
        step = self._resume()
        batches = tr.batches()
        for update in range(step + 1, cfg.updates + 1):
            started = time.perf_counter()
            stats = tr.step(*next(batches))
            ro = tr.last.rollout
            gold = statistics.fmean(vader_scores(response_texts(self.tok, ro.query_responses, ro.attention_mask,
                                                                ro.context_length)))
            row = {"step": update, "proxy_reward": stats["score"], "gold": gold, "kl": stats["kl"],
                   "entropy": stats["entropy"], "clipfrac": stats["clipfrac"], "kl_coef": stats["kl_coef"],
                   "pg_loss": stats["pg_loss"], "vf_loss": stats["vf_loss"], "response_length": stats["response_length"],
                   "eos_fraction": stats["eos_fraction"], "seconds": time.perf_counter() - started}
            self.history.append(row)
            ctx.log(row)
            ctx.print(f"update {update:3d}/{cfg.updates}  proxy {row['proxy_reward']:+.3f}  gold {gold:+.3f}  "
                      f"kl {row['kl']:.3f}  entropy {row['entropy']:.2f}  clipfrac {row['clipfrac']:.3f}  "
                      f"len {row['response_length']:.1f}")
            if ctx.run.train.save_every and update % ctx.run.train.save_every == 0 and ctx.is_main:
                save_checkpoint(ctx.run_dir.checkpoints, update, self.policy, tr.optimizer, tr.scheduler,
                                keep=ctx.run.train.keep_checkpoints)
        last = self.history[-5:]
        return {f"train_{k}": statistics.fmean(r[k] for r in last) for k in ("proxy_reward", "gold", "kl")} if last else {}

    @property
    def total_steps(self) -> int:
        """PPO updates (``ppo.updates``), not ``train.max_steps``."""
        return int(self.cfg.updates)

    def _resume(self) -> int:
        ckpt = latest_checkpoint(self.ctx.run_dir.checkpoints) if self.ctx.run_dir.resumed else None
        if ckpt is None:
            return 0
        step = load_checkpoint(ckpt, self.policy, self.trainer.optimizer, self.trainer.scheduler)
        self.ctx.run_dir.truncate_metrics(step)
        self.ctx.print(f"resumed from {ckpt} (update {step}); the prompt order restarts")
        return step

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``ppo_curves.png``, ``answers.json`` (held-out answers before/after) and ``policy/``.

        ``policy/`` holds ``adapter/`` (``hfx.save``: lora's peft-format adapter and ppo's value head) and the
        tokenizer. Returns the paths written.
        """
        written = []
        if self.history:
            plot_ppo_curves(self.history, self.ctx.run_dir.path / "ppo_curves.png", f"PPO on {self.ctx.run.model}")
            written.append(self.ctx.run_dir.path / "ppo_curves.png")
        if "after" in self.answers and "before" in self.answers:
            rows = [{"prompt": self.tok.decode(p, skip_special_tokens=True), "before": b, "after": a}
                    for p, b, a in zip(self.eval_prompts, self.answers["before"], self.answers["after"], strict=True)]
            if self.ctx.is_main:
                print_answers(rows, self.cfg.shown)
            atomic_write_json(out_dir / "answers.json", rows)
            written.append(out_dir / "answers.json")
        with atomic_dir(out_dir / "policy") as tmp:
            hfx.save(self.policy, tmp / "adapter")
            self.tok.save_pretrained(tmp)
        written.append(out_dir / "policy")
        return written
