"""``hfx run plugin=reward``: train a reward model from rankings, report held-out accuracy and Spearman with gold.

One linear script. With no argument it trains ``smollm2-135m`` (the policy's tokenizer) with a score head on
the bundled ``rankings`` set (smollm2's own answers ranked by VADER sentiment): InstructGPT's K-way loss, only
the last blocks trained (see configs/default.yaml for the measured choice). Evaluation reports, on the held-out
prompts, pairwise accuracy (the share of ranked pairs scored in the right order), the mean score margin, and
the Spearman correlation of the scores with the gold judgement (VADER's compound score, never trained on).
After training the scores are shifted so the mean training score is 0. ``artifacts/model`` is an
``AutoModelForSequenceClassification`` folder (+ tokenizer, ``hfx_reward.json``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from hfx.errors import HfxError
from hfx.io import atomic_dir
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop
from hfx_plugins.reward.batching import (
    GroupCollator,
    apply_shift,
    batch_loss,
    encode_groups,
    evaluate_groups,
    shift_to_zero_mean,
    split_pairs,
)
from hfx_plugins.reward.data import rankings_to_groups
from hfx_plugins.reward.frozen import FrozenCache, exact_on, first_trainable_block
from hfx_plugins.reward.io import save as save_reward

__all__ = ["RewardRecipe"]


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class RewardRecipe(Recipe):
    """setup -> evaluate -> train (+ shift) -> evaluate -> save."""

    def setup(self) -> None:
        """Load rankings (or pairs) and the backbone, put the score head on, build the training loop.

        Raises:
            HfxError: no ``data.path``, or malformed preference rows (named).
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = ctx.config("reward")
        if not run.data.path:
            raise HfxError("no data given; set data.path=<bundled name or file> (e.g. data.path=rankings)")
        data = ctx.load_data()
        gold = self.cfg.gold_column
        self.train_groups = rankings_to_groups(data["train"], gold)
        self.eval_groups = rankings_to_groups(data["eval"], gold)
        model, self.tokenizer = ctx.load_model("base")  # the bare trunk; a *ForCausalLM's LM head is never used
        self.model = ctx.apply_plugins(model)
        units = split_pairs(self.train_groups) if self.cfg.loss_type == "pairwise" else self.train_groups
        self.train_set = _Items(encode_groups(units, self.tokenizer, self.cfg))
        self.cache = self._frozen_cache()
        collate = GroupCollator(self.tokenizer.pad_token_id, self.tokenizer.padding_side)
        count = (lambda b: len(b["winners"])) if self.cfg.loss_type == "pairwise" else (lambda b: int(b["groups"].max()) + 1)
        self.loop = TrainLoop(ctx, self.model, self.train_set, collate, loss_fn=self._loss, count_fn=count,
                              evaluate=self.evaluate)
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        n_pairs = sum(len(g.pairs) for g in self.train_groups)
        ctx.print(f"reward: {run.model}, {n_train:,} trainable parameters; {len(self.train_groups)} train prompts "
                  f"({n_pairs} ranked pairs), {len(self.eval_groups)} held-out prompts; loss {self.cfg.loss_type}")

    def _frozen_cache(self) -> FrozenCache | None:
        """The frozen blocks' output for every training text, when only the top blocks train (see frozen.py)."""
        if not self.cfg.cache_frozen or self.ctx.accelerator.num_processes > 1:
            return None  # under DDP every step must go through the prepared (wrapped) model
        first = first_trainable_block(self.model)
        if first is None:
            return None
        texts = [ids for item in self.train_set.items for ids in item["ids"]]
        pad = self.tokenizer.pad_token_id
        if not exact_on(self.model, texts[:8], first, pad):
            self.ctx.print("reward: the frozen-block cache does not reproduce this model's scores (its forward changes "
                           "inputs_embeds); every step runs the whole model")
            return None
        start = time.perf_counter()
        cache = FrozenCache(self.model, first, pad, self.cfg.eval_batch_size)
        size = cache.fill(texts)
        self.ctx.print(f"reward: blocks 0-{first - 1} are frozen: run once over {len(cache.states)} training texts "
                       f"({size / 2**20:.0f} MiB kept, {time.perf_counter() - start:.0f} s); each step runs the blocks "
                       f"from {first} on")
        return cache

    def _loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scorer = None if self.cache is None else (lambda b: self.cache.scores(b["texts"]))  # type: ignore[union-attr]
        return batch_loss(model, batch, self.cfg, self.loop_step(), scorer=scorer)

    def loop_step(self) -> int | None:
        """The optimizer step being computed (for error messages), from the scheduler's count."""
        loop = getattr(self, "loop", None)
        return None if loop is None else loop.scheduler.last_epoch + 1

    def evaluate(self) -> dict[str, float]:
        """Held-out pairwise accuracy, score margin, mean score and Spearman with the gold column."""
        model = self.ctx.accelerator.unwrap_model(self.loop.model if hasattr(self, "loop") else self.model)
        return evaluate_groups(model, self.tokenizer, self.eval_groups, self.cfg, self.cfg.eval_batch_size)

    def train(self) -> dict[str, float]:
        """Train with the runner's loop, then shift the scores to a zero training mean (if asked)."""
        out = self.loop.run()
        if self.cfg.shift_to_zero_mean:
            model = self.ctx.accelerator.unwrap_model(self.loop.model)
            if self.cache is not None:  # the same mean as shift_to_zero_mean's full forward, from the cache
                old = self._cached_mean_score()
                apply_shift(model, old)
            else:
                old = shift_to_zero_mean(model, self.tokenizer, self.train_groups, self.cfg, self.cfg.eval_batch_size)
            self.ctx.print(f"reward: scores shifted by {-old:+.4f} (mean training score now 0)")
            out["reward_shift"] = -old
        return out

    @torch.no_grad()
    def _cached_mean_score(self) -> float:
        """Mean score over the distinct training texts, through the frozen-block cache, in eval mode."""
        assert self.cache is not None
        texts = list(self.cache.states)
        was = self.model.training
        self.model.eval()
        scores = torch.cat([self.cache.scores(texts[i:i + self.cfg.eval_batch_size])
                            for i in range(0, len(texts), self.cfg.eval_batch_size)])
        self.model.train(was)
        return float(scores.mean())

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``model/``: reward model, tokenizer and ``hfx_reward.json``, all or nothing."""
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        path = out_dir / "model"
        with atomic_dir(path) as tmp:  # model, tokenizer and hfx_reward.json appear together or not at all
            save_reward(model, tmp, self.cfg, tokenizer=self.tokenizer)
        return [path]
