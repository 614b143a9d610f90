"""``hfx run plugin=dpo``: DPO on a LoRA policy from the bundled rankings, judged by VADER on held-out prompts.

One linear script. With no other argument:

1. the policy: ``smollm2-135m`` with a LoRA adapter (the run's ``lora:`` section, set by dpo's preset); the
   reference is the same model with the adapter disabled;
2. the pairs: the bundled ``rankings`` (smollm2's own answers ranked by VADER), each prompt's best answer
   against its worst (``dpo.pairs=best_vs_worst``) or every ordered pair (``dpo.pairs=all``); no reward model;
3. before and after, on the held-out split: the implied-reward accuracy and DPO loss on ``dpo.eval_pairs``
   pairs, and ``dpo.eval_samples`` sampled answers per held-out prompt scored by VADER (gold, with a 95%
   interval over prompts) with their KL to the reference (summed over each answer, at ``dpo.temperature``).

Training goes through the runner's loop (``train.max_steps`` optimizer steps of ``train.batch_size`` pairs;
``metrics.jsonl``, ``curves.png``, checkpoints). Writes ``artifacts/answers.json`` (held-out answers before and
after) and ``artifacts/policy`` (the LoRA adapter in peft's format and the tokenizer).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

import hfx
from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json
from hfx.metrics import mean
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop
from hfx_plugins.dpo.data import collate_pairs
from hfx_plugins.dpo.logps import disable_dropout, dpo_batch_loss, reference
from hfx_plugins.dpo.trainer import encode_pairs
from hfx_plugins.ppo import (
    held_out_rollouts,
    last_token_scores,
    print_answers,
    response_texts,
    reward_model_for,
    vader_scores,
)

__all__ = ["DPORecipe"]


def gold_interval(gold: list[float], samples: int) -> tuple[float, float]:
    """The mean gold score and the half-width of its Student-t 95% interval over prompts (as ppo and grpo).

    The answers to one prompt are not independent, so the interval is over the per-prompt means (n = prompts;
    their mean is the same number, every prompt having ``samples`` answers): :func:`hfx.metrics.mean`, whose
    interval is ``scipy.stats.t.interval`` (t with n - 1 degrees of freedom, not the normal 1.96).

    Args:
        gold: VADER compound score of each answer (N,), prompt by prompt, ``samples`` answers each.
        samples: Answers per prompt (``dpo.eval_samples``), >= 1.

    Returns:
        (mean as an :class:`~hfx.metrics.Estimate` carrying n and the interval, or a float for one prompt;
        half-width, NaN for one prompt).
    """
    per_prompt = [statistics.fmean(gold[i:i + samples]) for i in range(0, len(gold), samples)]  # (prompts,)
    if len(per_prompt) < 2:
        return statistics.fmean(gold), math.nan
    est = mean(per_prompt, statistics.fmean(gold))
    return est, (est.ci95[1] - est.ci95[0]) / 2

class DPORecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save."""

    def setup(self) -> None:
        """Load the policy with its adapter, the train and held-out pairs and prompts; build the loop.

        Raises:
            HfxError: no ``lora:`` section, no ``data.path``, or malformed or fully tied ranking rows (named).
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = cfg = ctx.config("dpo")
        if "lora" not in [p.name for p in ctx.plugins]:
            raise HfxError("dpo trains a LoRA policy against its adapter-free base: give it a lora: section (dpo's "
                           "default preset has one) or run plugin=[lora,dpo]")
        if not run.data.path:
            raise HfxError("no data given; set data.path=<bundled name or file> (e.g. data.path=rankings)")
        policy, self.tok = ctx.load_model("causal-lm")
        self.policy = ctx.apply_plugins(policy)
        if cfg.disable_dropout:
            disable_dropout(self.policy)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        data = ctx.load_data()
        self.train_set = encode_pairs(data["train"], self.tok, cfg.max_length, cfg.pairs)
        self.eval_set = encode_pairs(data["eval"], self.tok, cfg.max_length, cfg.pairs).items[: cfg.eval_pairs]
        prompts = list(dict.fromkeys(data["eval"]["prompt"]))[: cfg.eval_prompts]  # one entry per prompt, in order
        self.eval_prompts = [ids[-cfg.max_prompt_length:] for ids in self.tok(prompts)["input_ids"]]
        pad = self.tok.pad_token_id
        self.collate = lambda rows: collate_pairs(rows, pad, cfg.max_length)
        self.loop = TrainLoop(ctx, self.policy, self.train_set, self.collate, loss_fn=self._loss,
                              count_fn=lambda b: b["input_ids"].size(0) // 2)  # pairs: rows are chosen + rejected
        n_train = sum(p.numel() for p in self.policy.parameters() if p.requires_grad)
        ctx.print(f"dpo: policy {run.model} + LoRA r={ctx.config('lora').r} ({n_train:,} trainable parameters); "
                  f"{len(self.train_set)} train pairs ({cfg.pairs}), {len(self.eval_set)} held-out pairs, "
                  f"{len(self.eval_prompts)} held-out prompts; loss {cfg.loss_type}, beta {cfg.beta}")
        self.answers: dict[str, list[list[str]]] = {}
        self.training_started = False
        # a reward model to score the held-out answers with (a statistic, comparable with ppo's and grpo's proxy)
        self.proxy = reward_model_for(cfg.proxy_reward_model, self.tok, ctx) if cfg.proxy_reward_model else None

    def _loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return dpo_batch_loss(model, batch, self.cfg.beta, self.cfg.loss_type)[0]

    @torch.no_grad()
    def _pair_metrics(self) -> dict[str, float]:
        """Held-out DPO loss, implied-reward accuracy (chosen's reward above rejected's) and margin."""
        losses, wins, margins = [], [], []
        for start in range(0, len(self.eval_set), 8):
            batch = self.collate(self.eval_set[start:start + 8])
            _, parts = dpo_batch_loss(self.policy, batch, self.cfg.beta, self.cfg.loss_type)
            losses += parts["losses"].tolist()
            margins += (parts["chosen_rewards"] - parts["rejected_rewards"]).tolist()
            wins += (parts["chosen_rewards"] > parts["rejected_rewards"]).float().tolist()  # strict, as trl
        if not losses:
            return {}
        return {"dpo_loss": statistics.fmean(losses), "reward_accuracy": statistics.fmean(wins),
                "reward_margin": statistics.fmean(margins)}

    @torch.no_grad()
    def _gold_and_kl(self) -> tuple[dict[str, float], list[str]]:
        """Gold (VADER) of sampled held-out answers with a 95% interval over prompts, and their KL to the reference."""
        cfg, pad, eos = self.cfg, self.tok.pad_token_id, self.tok.eos_token_id
        texts, kls, proxy = [], [], []
        for ro, kl in held_out_rollouts(self.policy, lambda: reference(self.policy, None), self.eval_prompts,
                                        cfg.eval_samples, cfg.max_new_tokens, cfg.temperature, eos, pad,
                                        seed=self.ctx.run.seed + 1_000_003):  # the same draws before and after
            texts += response_texts(self.tok, ro.query_responses, ro.attention_mask, ro.context_length)
            kls += kl
            if self.proxy is not None:
                proxy += last_token_scores(self.proxy, ro.query_responses, ro.attention_mask,
                                           ro.context_length).tolist()
        if not texts:
            return {}, []
        gold = vader_scores(texts)
        centre, half = gold_interval(gold, cfg.eval_samples)
        return {"gold": centre, "gold_ci95": half, "kl": statistics.fmean(kls),
                "positive_share": sum(g > 0.05 for g in gold) / len(gold),
                **({"proxy_reward": statistics.fmean(proxy)} if proxy else {})}, texts

    def evaluate(self) -> dict[str, float]:
        """Held-out pair metrics (DPO loss, implied-reward accuracy, margin), then the gold score of sampled answers
        with its t 95% half-width (:func:`gold_interval`) and their KL to the reference; keeps the answers for save.
        """
        self.policy.eval()
        out = self._pair_metrics()
        gold, texts = self._gold_and_kl()
        self.policy.train()
        key = "after" if self.training_started else "before"
        n = self.cfg.eval_samples
        self.answers[key] = [texts[i:i + n] for i in range(0, len(texts), n)]
        if gold:
            self.ctx.print(f"dpo ({key}): held-out gold {gold['gold']:+.3f} ± {gold['gold_ci95']:.3f} (95%), "
                           f"KL to reference {gold['kl']:.3f}, implied-reward accuracy {out.get('reward_accuracy', 0):.3f}")
        return {**out, **gold}

    def train(self) -> dict[str, float]:
        """Train with the runner's loop (``train.max_steps`` optimizer steps); returns its metrics."""
        self.training_started = True
        return self.loop.run()

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``policy/`` (the LoRA adapter in peft's format and the tokenizer) and, once there are answers
        before and after, ``answers.json``; returns the paths written.
        """
        policy = out_dir / "policy"
        with atomic_dir(policy) as tmp:  # the adapter (peft's format) and the tokenizer, together or not at all
            hfx.save(self.policy, tmp / "adapter")
            self.tok.save_pretrained(tmp)
        if "after" not in self.answers or "before" not in self.answers:
            return [policy]
        rows = [{"prompt": self.tok.decode(p, skip_special_tokens=True), "before": b, "after": a}
                for p, b, a in zip(self.eval_prompts, self.answers["before"], self.answers["after"], strict=True)]
        if self.ctx.is_main:
            print_answers(rows, self.cfg.shown, "DPO")
        atomic_write_json(out_dir / "answers.json", rows)
        return [policy, out_dir / "answers.json"]
