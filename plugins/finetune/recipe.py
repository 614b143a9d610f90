"""``hfx run plugin=finetune``: full fine-tuning of an encoder, decoder or encoder-decoder with its task head.

One linear script: load the model for the task, apply the plugins, tokenize, train with the shared loop,
evaluate before and after, save in transformers' format (model + tokenizer) under ``artifacts/``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hfx.data.collate import collator_for_task, tokenize_for_task
from hfx.errors import HfxError
from hfx.io import atomic_dir
from hfx.metrics import exact_match
from hfx.models.loading import load_config, model_family, resolve_task
from hfx.models.zoo import resolve_model
from hfx.registry import Recipe
from hfx.runner.evaluation import greedy_answers, task_metrics
from hfx.runner.loop import TrainLoop
from hfx_plugins.finetune.io import save as save_finetuned
from hfx_plugins.finetune.losses import causal_lm_loss, seq2seq_loss

__all__ = ["FinetuneRecipe"]


class FinetuneRecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save, for the task that ``task`` (or the family) names."""

    def setup(self) -> None:
        """Load the model for the task, apply the run's plugins, tokenize train and eval data.

        Raises:
            HfxError: a task finetune does not train, no ``data.path``, missing columns, or labels beyond
                ``finetune.num_labels``.
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = ctx.config("finetune")
        family = model_family(load_config(resolve_model(run.model), trust_remote_code=run.trust_remote_code))
        self.task = resolve_task(run.task, family)
        if self.task not in ("sequence-classification", "causal-lm", "seq2seq-lm"):
            raise HfxError(f"finetune does not train task={self.task}; use sequence-classification, causal-lm or seq2seq-lm")
        d = run.data
        required = {
            "sequence-classification": [d.text_column, d.label_column] + ([d.text_pair_column] if d.text_pair_column else []),
            "causal-lm": [d.text_column],
            "seq2seq-lm": [d.text_column, d.target_column],
        }[self.task]
        if not d.path:
            raise HfxError("no data given; set data.path=<bundled name or file> (e.g. data.path=sentiment)")
        self.data = ctx.load_data(required)
        if self.task == "sequence-classification":
            self._check_labels()
        # A classifier starts from the bare backbone: hfx's own head is put on by finetune's apply().
        model, self.tokenizer = ctx.load_model("base" if self.task == "sequence-classification" else self.task)
        self.model = ctx.apply_plugins(model)
        self.train_set = tokenize_for_task(self.data["train"], self.tokenizer, self.task, d.max_length)
        self.eval_set = tokenize_for_task(self.data["eval"], self.tokenizer, self.task, d.max_length)
        self.collate = collator_for_task(self.tokenizer, self.task, seed=run.seed, model=self.model)
        self.loop = TrainLoop(ctx, self.model, self.train_set, self.collate, loss_fn=self._loss, evaluate=self.evaluate)
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        ctx.print(f"finetune: {self.task} on {run.model} ({family}); {n_train:,} trainable parameters; "
                  f"{len(self.train_set)} train / {len(self.eval_set)} eval examples")

    def _check_labels(self) -> None:
        labels = self.data["train"]["label"]
        if self.cfg.num_labels > 1 and labels and isinstance(labels[0], int):
            top = max(max(labels), max(self.data["eval"]["label"], default=0))
            if top >= self.cfg.num_labels:
                raise HfxError(f"labels go up to {top} but finetune.num_labels={self.cfg.num_labels}; "
                               f"set finetune.num_labels={top + 1}")

    def _loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The in-house loss of each task (checked against transformers' by `hfx validate`)."""
        if self.task == "sequence-classification":
            return model(**batch).loss  # SequenceClassifier computes hfx's classification loss
        labels = batch.pop("labels")
        logits = model(**batch).logits  # (B, T, V)
        batch["labels"] = labels
        return causal_lm_loss(logits, labels) if self.task == "causal-lm" else seq2seq_loss(logits, labels)

    def evaluate(self) -> dict[str, float]:
        """Held-out loss (+ accuracy for classifiers, perplexity for LMs, exact match of greedy seq2seq answers)."""
        model = self.ctx.accelerator.unwrap_model(self.loop.model if hasattr(self, "loop") else self.model)
        loss_fn = None if self.task == "sequence-classification" else self._loss
        metrics = task_metrics(model, self.eval_set, self.collate, self.task, self.ctx.run.train.eval_batch_size, loss_fn)
        if self.task == "seq2seq-lm" and self.cfg.eval_generations:
            rows = self.data["eval"].select(range(min(self.cfg.eval_generations, len(self.data["eval"]))))
            answers = greedy_answers(model, self.tokenizer, list(rows["text"]), self.cfg.max_new_tokens, seq2seq=True,
                                     batch_size=32, max_length=self.ctx.run.data.max_length)
            metrics["exact_match"] = exact_match(answers, list(rows["target"]))
        return metrics

    def train(self) -> dict[str, float]:
        """Train with the runner's loop; returns its metrics."""
        return self.loop.run()

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``model/``: the fine-tuned model and its tokenizer, together or not at all."""
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        path = out_dir / "model"
        with atomic_dir(path) as tmp:  # model and tokenizer appear together or not at all
            save_finetuned(model, tmp, self.cfg)
            self.tokenizer.save_pretrained(tmp)
        return [path]
