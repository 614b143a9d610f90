"""``hfx run plugin=finetune``: full fine-tuning of an encoder, decoder or encoder-decoder with its task head.

One linear script: load the model for the task, apply the plugins, tokenize, train with the shared loop,
evaluate before and after, save in transformers' format (model + tokenizer) under ``artifacts/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hfx.data.collate import collator_for_task, tokenize_for_task
from hfx.errors import HfxError
from hfx.io import atomic_dir
from hfx.models.loading import load_config, model_family, resolve_task
from hfx.models.zoo import resolve_model
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop
from hfx_plugins.finetune.io import save as save_finetuned
from hfx_plugins.finetune.losses import causal_lm_loss, seq2seq_loss

__all__ = ["FinetuneRecipe"]


class FinetuneRecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save, for the task that ``task`` (or the family) names."""

    def setup(self) -> None:
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

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model = self.ctx.accelerator.unwrap_model(self.loop.model if hasattr(self, "loop") else self.model)
        was_training = model.training
        model.eval()
        loader = DataLoader(self.eval_set, batch_size=self.ctx.run.train.eval_batch_size, collate_fn=self.collate)
        total_loss, n_batches, correct, seen = 0.0, 0, 0, 0
        for batch in loader:
            batch = {k: v.to(self.ctx.accelerator.device) for k, v in batch.items()}
            if self.task == "sequence-classification":
                out = model(**batch)
                total_loss += out.loss.item()
                if self.cfg.num_labels > 1:
                    correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
                    seen += batch["labels"].numel()
            else:
                total_loss += self._loss(model, batch).item()
            n_batches += 1
        metrics = {"loss": total_loss / max(n_batches, 1)}
        if self.task == "sequence-classification" and seen:
            metrics["accuracy"] = correct / seen
        if self.task == "causal-lm":
            metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
        if self.task == "seq2seq-lm":
            metrics["exact_match"] = self._exact_match(model)
        model.train(was_training)
        return metrics

    def _exact_match(self, model: Any) -> float:
        """Greedy generations compared with the targets, on the first ``eval_generations`` eval examples."""
        rows = self.data["eval"].select(range(min(self.cfg.eval_generations, len(self.data["eval"]))))
        hits = 0
        for start in range(0, len(rows), 32):
            chunk = rows[start:start + 32]
            enc = self.tokenizer(chunk["text"], padding=True, truncation=True, max_length=self.ctx.run.data.max_length,
                                 return_tensors="pt").to(self.ctx.accelerator.device)
            enc.pop("token_type_ids", None)
            out = model.generate(**enc, max_new_tokens=self.cfg.generate_max_new_tokens, do_sample=False)
            texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
            hits += sum(t.strip().lower() == str(g).strip().lower() for t, g in zip(texts, chunk["target"], strict=True))
        return hits / max(len(rows), 1)

    def train(self) -> dict[str, float]:
        return self.loop.run()

    def save(self, out_dir: Path) -> list[Path]:
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        path = out_dir / "model"
        with atomic_dir(path) as tmp:  # model and tokenizer appear together or not at all
            save_finetuned(model, tmp, self.cfg)
            self.tokenizer.save_pretrained(tmp)
        return [path]
