"""``hfx run plugin=lora``: fine-tune a model through LoRA adapters, evaluate before and after, save the adapter.

One linear script. With no other argument it instruction-tunes ``smollm2-135m`` on the bundled
``instructions`` set (prompt tokens masked out of the loss); the presets do the same for an encoder
(``preset=encoder``: minilm, sentiment classification with a new head in ``modules_to_save``) and an
encoder-decoder (``preset=seq2seq``: minilm2minilm answering "positive"/"negative").

It prints the trainable parameters, the loss curve goes through the shared runner (metrics.jsonl and
curves.png), evaluation reports held-out loss and perplexity (accuracy for classifiers) and, for models
that generate, exact match and a few answers before and after side by side. ``artifacts/adapter`` is
peft's format; ``lora.merge=true`` adds ``artifacts/merged``, a plain transformers model (under
``plugin=[quant,lora]`` the packed model in quant's format, merged by requantizing, with
``artifacts/merge_report.json``: per layer, the rounding error the requantization added against the update).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hfx
from hfx.data.collate import collator_for_task, tokenize_for_task
from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json
from hfx.metrics import exact_match
from hfx.models.loading import load_config, model_family, resolve_task
from hfx.models.zoo import resolve_model
from hfx.registry import Recipe
from hfx.runner.evaluation import greedy_answers, task_metrics
from hfx.runner.loop import TrainLoop
from hfx_plugins.lora.io import save as save_adapters
from hfx_plugins.lora.model import merge_adapter, merge_and_unload
from hfx_plugins.lora.optim import loraplus_param_groups
from hfx_plugins.lora.sft import completion_loss, prompt_text, tokenize_instructions
from hfx_plugins.lora.trainable import parameter_counts

__all__ = ["LoraRecipe"]

_SHOWN = 6  # answers printed side by side


class LoraRecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save, for classification, causal LM (plain or instructions) or seq2seq."""

    def setup(self) -> None:
        """Load the data and the model, apply the run's plugins, build the training loop.

        Raises:
            HfxError: no ``data.path``, a task the recipe does not train, or data lacking a needed column.
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = ctx.config("lora")
        family = model_family(load_config(resolve_model(run.model), trust_remote_code=run.trust_remote_code))
        self.task = resolve_task(run.task, family)
        d = run.data
        if not d.path:
            raise HfxError("no data given; set data.path=<bundled name or file> (e.g. data.path=instructions)")
        needs = {"sequence-classification": [d.text_column, d.label_column], "causal-lm": [d.text_column],
                 "seq2seq-lm": [d.text_column, d.target_column]}
        if self.task not in needs:
            raise HfxError(f"the lora recipe trains sequence-classification, causal-lm or seq2seq-lm, not {self.task}")
        self.data = ctx.load_data(needs[self.task])
        self.instructions = self.task == "causal-lm" and "target" in self.data["train"].column_names
        self.generates = self.instructions or self.task == "seq2seq-lm"
        extra = {"num_labels": self._num_labels()} if self.task == "sequence-classification" else {}
        model, self.tokenizer = ctx.load_model(self.task, **extra)
        self.model = ctx.apply_plugins(model)
        if self.instructions:
            tokenize = lambda ds: tokenize_instructions(ds, self.tokenizer, d.max_length)  # noqa: E731
        else:
            tokenize = lambda ds: tokenize_for_task(ds, self.tokenizer, self.task, d.max_length)  # noqa: E731
        self.train_set, self.eval_set = tokenize(self.data["train"]), tokenize(self.data["eval"])
        self.collate = collator_for_task(self.tokenizer, "seq2seq-lm" if self.instructions else self.task,
                                         seed=run.seed, model=self.model)
        groups = None
        if self.cfg.loraplus_lr_ratio:
            groups = loraplus_param_groups(self.model, lr=run.train.learning_rate,
                                           loraplus_lr_ratio=self.cfg.loraplus_lr_ratio,
                                           loraplus_lr_embedding=self.cfg.loraplus_lr_embedding,
                                           weight_decay=run.train.weight_decay)
        self.loss = completion_loss if self.task == "causal-lm" else (lambda m, b: m(**b).loss)
        self.loop = TrainLoop(ctx, self.model, self.train_set, self.collate, loss_fn=self.loss,
                              evaluate=self.evaluate, param_groups=groups)
        trainable, total = parameter_counts(self.model)
        what = "instruction tuning" if self.instructions else self.task
        ctx.print(f"lora: {what} on {run.model} ({family}); trainable parameters {trainable:,} of {total:,} "
                  f"({100 * trainable / total:.3f}%); {len(self.train_set)} train / {len(self.eval_set)} eval examples")
        self.answers: dict[str, list[str]] = {}
        self.training_started = False

    def _num_labels(self) -> int:
        feature = self.data["train"].features.get("label")
        if hasattr(feature, "num_classes"):
            return int(feature.num_classes)
        return len(set(self.data["train"]["label"]) | set(self.data["eval"]["label"]))

    def evaluate(self) -> dict[str, float]:
        """Held-out loss, accuracy (classifiers) or perplexity, and exact match of greedy answers."""
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        loss_fn = None if self.task == "sequence-classification" else self.loss
        metrics = task_metrics(model, self.eval_set, self.collate, self.task, self.ctx.run.train.eval_batch_size, loss_fn)
        if self.generates and self.cfg.eval_generations:
            metrics["exact_match"] = self._generate(model)
        return metrics

    def _generate(self, model: Any) -> float:
        rows = self.data["eval"].select(range(min(self.cfg.eval_generations, len(self.data["eval"]))))
        seq2seq = self.task == "seq2seq-lm"
        # A decoder answers after its chat prompt, which already holds the special tokens it needs.
        prompts = list(rows["text"]) if seq2seq else [prompt_text(self.tokenizer, q) for q in rows["text"]]
        got = greedy_answers(model, self.tokenizer, prompts, self.cfg.max_new_tokens, seq2seq=seq2seq,
                             add_special_tokens=seq2seq)
        self.answers["after" if self.training_started else "before"] = got  # mid-training ones: overwritten
        return exact_match(got, list(rows["target"]))

    def train(self) -> dict[str, float]:
        """Train the adapters with the runner's loop; every evaluation from here on counts as "after"."""
        self.training_started = True  # every later evaluation is "after" (train.eval_before=false: no "before")
        return self.loop.run()

    def _print_answers(self) -> list[dict[str, str]]:
        if "after" not in self.answers or "before" not in self.answers:
            return []
        rows = self.data["eval"].select(range(len(self.answers["after"])))
        table = [{"instruction": q, "expected": str(t), "before": b, "after": a} for q, t, b, a in
                 zip(rows["text"], rows["target"], self.answers["before"], self.answers["after"], strict=True)]
        from hfx.tables import print_table

        if self.ctx.is_main:
            print_table(f"held-out answers before and after LoRA (first {_SHOWN})",
                        [{c: v[:160] for c, v in row.items()} for row in table[:_SHOWN]],
                        justify=dict.fromkeys(("instruction", "expected", "before", "after"), "left"))
        return table

    def save(self, out_dir: Path) -> list[Path]:
        """Write the held-out answers (``answers.json``), ``adapter/`` (peft's format + tokenizer) and, with
        ``lora.merge``, ``merged/`` (the adapters merged into the base); returns the paths written.
        """
        model = self.ctx.accelerator.unwrap_model(self.loop.model)
        written = []
        table = self._print_answers()
        if table:
            atomic_write_json(out_dir / "answers.json", table)
            written.append(out_dir / "answers.json")
        with atomic_dir(out_dir / "adapter") as tmp:  # adapter and tokenizer appear together or not at all
            save_adapters(model, tmp)
            self.tokenizer.save_pretrained(tmp)
        written.append(out_dir / "adapter")
        if self.cfg.merge:  # last: merging replaces the LoRA layers of this model
            reports = merge_adapter(model)  # QLoRA: one row per quantized base, what requantizing the merge cost
            merged = merge_and_unload(model)  # keeps that merge and removes the LoRA layers
            with atomic_dir(out_dir / "merged") as tmp:
                hfx.save(merged, tmp)  # save_pretrained; under plugin=[quant,lora] quant's packed format
                self.tokenizer.save_pretrained(tmp)
            written.append(out_dir / "merged")
            if reports:
                atomic_write_json(out_dir / "merge_report.json", reports)
                written.append(out_dir / "merge_report.json")
                worst = max(reports, key=lambda r: float(r["error_vs_update"]))
                self.ctx.print(f"lora: merged into {len(reports)} quantized layers by requantizing; largest rounding "
                               f"error / update norm {float(worst['error_vs_update']):.4f} ({worst['layer']})")
        return written
