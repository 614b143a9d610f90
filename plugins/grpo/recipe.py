"""``hfx run plugin=grpo``: GRPO (or RLOO, ``grpo.estimator=rloo``) from the bundled rankings, judged by VADER.

One linear script, ppo's run with the group estimator in PPO's place (the recipe is ppo's ``PPORecipe``, whose
held-out evaluation and resumption it inherits):

1. the reward model: ppo's (``hfx_plugins.ppo.reward_model_for``): ``grpo.reward_model`` (a folder written by
   ``hfx.save`` of the reward plugin), else the one ppo caches under ``$HFX_CACHE/ppo/`` (trained on first use
   by the reward plugin's defaults on the bundled rankings), or ``vader`` (an oracle run);
2. the policy: ``smollm2-135m`` with the run's ``lora:`` adapter (the reference is the adapter disabled);
   prompts: the ``prompt`` column of the rankings' train split, each sampled ``num_generations`` times;
3. before and after: ``eval_samples`` answers per held-out prompt sampled with a fixed seed, scored by VADER
   (gold, with a t 95% interval over the prompts), by the reward model (proxy), and their KL to the reference;
   per update: proxy reward, gold score, KL, entropy and the reward's spread.

Writes ``grpo_curves.png`` (run folder), ``artifacts/answers.json`` (held-out answers before/after) and
``artifacts/policy`` (``hfx.save``: the LoRA adapter in peft's format, and the tokenizer).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import hfx
from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json
from hfx.runner.checkpoint import save_checkpoint
from hfx_plugins.grpo.plots import plot_grpo_curves
from hfx_plugins.grpo.trainer import GRPOTrainer
from hfx_plugins.ppo import (
    PPORecipe,
    load_prompts,
    print_answers,
    response_texts,
    reward_model_for,
    vader_scores,
)

__all__ = ["GRPORecipe"]

KEYS = ("kl", "entropy", "clip_ratio", "reward_std", "loss", "completion_length", "eos_fraction")


class GRPORecipe(PPORecipe):
    """setup -> evaluate -> train -> evaluate -> save (``evaluate``, ``total_steps`` and resuming are ppo's)."""

    def setup(self) -> None:
        """Build the policy (lora), the prompts, the reward model and the trainer.

        Raises:
            HfxError: no ``lora`` plugin in the run, bad prompts or reward model (ppo's messages).
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = cfg = ctx.config("grpo")
        if "lora" not in [p.name for p in ctx.plugins]:
            raise HfxError("grpo trains a LoRA policy against its adapter-free base: give it a lora: section (grpo's "
                           "default preset has one) or run plugin=[lora,grpo]")
        policy, self.tok = ctx.load_model("causal-lm")
        self.policy = ctx.apply_plugins(policy)
        self.train_prompts, self.eval_prompts = load_prompts(self.tok, cfg, ctx.print)
        self.reward = reward_model_for(cfg.reward_model, self.tok, ctx)
        self.trainer = GRPOTrainer(cfg, self.tok, self.policy, reward_model=self.reward,
                                   train_dataset=[{"input_ids": p} for p in self.train_prompts], num_updates=cfg.updates)
        n_train = sum(p.numel() for p in self.policy.parameters() if p.requires_grad)
        ctx.print(f"{cfg.estimator}: policy {run.model} + LoRA r={ctx.config('lora').r} ({n_train:,} trainable "
                  f"parameters); {len(self.train_prompts)} train / {len(self.eval_prompts)} held-out prompts; "
                  f"{cfg.updates} updates of {self.trainer.prompts_per_update} prompts x {cfg.num_generations} "
                  f"completions, {cfg.steps_per_generation * cfg.num_iterations} optimizer steps each")
        self.answers: dict[str, list[list[str]]] = {}
        self.training_started = False
        self.history: list[dict[str, float]] = []

    def train(self) -> dict[str, float]:
        """Run ``grpo.updates`` updates (resuming from the last checkpoint); log and print each.

        Returns:
            The means of proxy reward, gold score and KL over the last 5 updates (``train_proxy_reward``, ...).
        """
        ctx, cfg, tr = self.ctx, self.cfg, self.trainer
        self.training_started = True
        batches = tr.batches()
        for update in range(self._resume() + 1, cfg.updates + 1):
            started = time.perf_counter()
            stats = tr.step(next(batches))
            ro = tr.last["rollout"]
            texts = response_texts(self.tok, ro.query_responses, ro.attention_mask, ro.context_length)
            row = {"step": update, "proxy_reward": stats["reward"], "gold": statistics.fmean(vader_scores(texts)),
                   **{k: stats[k] for k in KEYS}, "seconds": time.perf_counter() - started}
            self.history.append(row)
            ctx.log(row)
            ctx.print(f"update {update:3d}/{cfg.updates}  proxy {row['proxy_reward']:+.3f}  gold {row['gold']:+.3f}  "
                      f"kl {row['kl']:.3f}  entropy {row['entropy']:.2f}  len {row['completion_length']:.1f}")
            if ctx.run.train.save_every and update % ctx.run.train.save_every == 0 and ctx.is_main:
                save_checkpoint(ctx.run_dir.checkpoints, update, self.policy, tr.optimizer, tr.scheduler,
                                keep=ctx.run.train.keep_checkpoints)
        last = self.history[-5:]
        return {f"train_{k}": statistics.fmean(r[k] for r in last) for k in ("proxy_reward", "gold", "kl")} if last else {}

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``grpo_curves.png``, ``answers.json`` (held-out answers before/after) and ``policy/``."""
        written = []
        name = self.cfg.estimator.upper()
        if self.history:
            path = self.ctx.run_dir.path / "grpo_curves.png"
            written.append(plot_grpo_curves(self.history, path, f"{name} on {self.ctx.run.model}"))
        if "after" in self.answers and "before" in self.answers:
            rows = [{"prompt": self.tok.decode(p, skip_special_tokens=True), "before": b, "after": a}
                    for p, b, a in zip(self.eval_prompts, self.answers["before"], self.answers["after"], strict=True)]
            if self.ctx.is_main:
                print_answers(rows, self.cfg.shown, name)
            atomic_write_json(out_dir / "answers.json", rows)
            written.append(out_dir / "answers.json")
        with atomic_dir(out_dir / "policy") as tmp:  # the adapter (peft's format) and the tokenizer, together
            hfx.save(self.policy, tmp / "adapter")
            self.tok.save_pretrained(tmp)
        written.append(out_dir / "policy")
        return written
