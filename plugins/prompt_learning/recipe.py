"""``hfx run`` for a plugin that trains a few added parameters of a frozen causal LM on the label-word task.

:class:`LabelWordRecipe` is the script the ``prefix_tuning`` and ``prompt_tuning`` recipes share; each of them
names its plugin and says what it trains (:meth:`LabelWordRecipe.describe`). The steps:

1. ``setup``: load the causal LM, apply the run's plugins (which freeze it and add the trained module), build
   one training row per example (:func:`hfx_plugins.prompt_learning.encode_rows`: the loss on the label word
   only) and the shared training loop (:class:`hfx.runner.loop.TrainLoop`).
2. ``evaluate`` (before and after): every label word scored after every prompt
   (:func:`hfx_plugins.prompt_learning.label_word_scores`); ``accuracy`` (lm-eval's ``acc``), ``label_nll``
   (the gold word's mean negative log-likelihood) and milliseconds per example.
3. ``train``: AdamW on the trainable parameters; the training time and their count.
4. ``save``: ``artifacts/adapter`` in peft's format (``PeftModel.from_pretrained(base, path)`` reads it),
   with the tokenizer beside it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hfx import registry
from hfx.errors import HfxError
from hfx.io import atomic_dir
from hfx.metrics import mean, proportion
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop
from hfx_plugins.prompt_learning.label_words import collate, encode_rows, label_word_scores

__all__ = ["LabelWordRecipe"]


class LabelWordRecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save (see the module docstring).

    Subclasses set :attr:`plugin` (the config section holding ``template`` and ``label_words``) and
    :meth:`describe` (one line on what the plugin added to the model, printed by ``setup``).
    """

    plugin = ""

    def describe(self, model: nn.Module) -> str:
        """What ``model`` trains, in words (e.g. "10 virtual-token embeddings"); the plugin's own line."""
        raise NotImplementedError

    def setup(self) -> None:
        """Load the causal LM, apply the run's plugins, build the label-word examples and the training loop.

        Raises:
            HfxError: no data, a label outside the label words, or a label word with no tokens.
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = ctx.config(self.plugin)
        if not run.data.path:
            raise HfxError("no data given; set data.path=<bundled name or file> (e.g. data.path=sentiment)")
        data = ctx.load_data([run.data.text_column, run.data.label_column])
        model, self.tokenizer = ctx.load_model("causal-lm")
        self.model = ctx.apply_plugins(model)
        self.train_rows = self._rows(data["train"])
        self.eval_prompts = [self.cfg.template.format(text=t) for t in data["eval"][run.data.text_column]]
        self.eval_labels = torch.tensor(self._labels(data["eval"]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.loop = TrainLoop(ctx, self.model, self.train_rows, collate(pad))
        self.trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        ctx.print(f"{self.plugin}: {run.model}, {self.describe(self.model)}, label words {self.cfg.label_words}; "
                  f"trainable parameters {self.trainable:,} of {total:,} ({100 * self.trainable / total:.4f}%); "
                  f"{len(self.train_rows)} train / {len(self.eval_prompts)} eval examples")

    def _labels(self, ds: Any) -> list[int]:
        labels = [int(v) for v in ds[self.ctx.run.data.label_column]]
        bad = [v for v in labels if not 0 <= v < len(self.cfg.label_words)]
        if bad:
            raise HfxError(f"label {bad[0]} has no label word; {self.plugin}.label_words has {len(self.cfg.label_words)}")
        return labels

    def _rows(self, ds: Any) -> list[dict[str, list[int]]]:
        prompts = [self.cfg.template.format(text=t) for t in ds[self.ctx.run.data.text_column]]
        words = [self.cfg.label_words[i] for i in self._labels(ds)]
        return encode_rows(self.tokenizer, prompts, words, self.ctx.run.data.max_length)

    def evaluate(self) -> dict[str, float]:
        """Score every label word after every held-out prompt (:func:`label_word_scores`, (N, C) log-probs).

        Returns ``accuracy`` (lm-evaluation-harness's ``acc``: the argmax word is the gold one, with its Wilson
        interval), ``label_nll`` (the gold word's mean negative log-likelihood in nats, with its t interval) and
        ``ms_per_example`` (milliseconds of scoring per held-out prompt).
        """
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        scores = label_word_scores(model, self.tokenizer, self.eval_prompts, self.cfg.label_words,
                                   self.ctx.run.train.eval_batch_size, self.ctx.run.data.max_length)  # (N, C)
        seconds = time.perf_counter() - started
        model.train(was_training)
        gold = scores.gather(1, self.eval_labels[:, None])[:, 0]  # (N,)
        n = len(self.eval_labels)  # the same numbers as before, carrying n and a 95% CI (hfx.metrics.Estimate)
        return {"accuracy": proportion(float((scores.argmax(-1) == self.eval_labels).float().mean()), n),
                "label_nll": mean((-gold).tolist(), float(-gold.mean())) if n > 1 else float(-gold.mean()),
                "ms_per_example": 1000 * seconds / max(len(self.eval_prompts), 1)}

    def train(self) -> dict[str, float]:
        """AdamW on the trainable parameters through the runner's loop; its metrics plus ``train_seconds`` and
        ``trainable_params``.
        """
        started = time.perf_counter()
        out = self.loop.run()
        return {**out, "train_seconds": round(time.perf_counter() - started, 1), "trainable_params": self.trainable}

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``adapter/`` (the plugin's adapter in peft's format, the tokenizer beside it); returns its path."""
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        with atomic_dir(out_dir / "adapter") as tmp:  # peft's format, with the tokenizer beside it
            registry.get(self.plugin).save(model, tmp)  # type: ignore[misc]
            self.tokenizer.save_pretrained(tmp)
        return [out_dir / "adapter"]
