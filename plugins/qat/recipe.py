"""``hfx run plugin=qat``: does quantization-aware training win back what post-training quantization loses?

On an encoder classifier (default: minilm on the bundled ``sentiment`` set, hfx's finetune head):

1. fine-tune in fp32 for ``train.max_steps`` -> the fp32 row;
2. for each of ``qat.compare_bits``: PTQ of that model with min/max ranges (the quantizer QAT trains
   through) and with hfx's clip-range search (the strongest data-free PTQ here); then QAT from the same
   fp32 model for ``qat.qat_steps`` steps, ``convert`` to packed layers, and evaluate the packed model;
3. control: the fp32 model trained for the same ``qat.qat_steps`` extra steps, so that QAT is not credited
   with what more training alone gives; and that control model quantized by PTQ, the fair PTQ baseline
   (same training budget as QAT).

One table: accuracy and loss of every row, and for QAT rows the largest difference between the packed
model's logits and the fake-quantized forward's (convert must be exact to 1e-5). ``evaluate`` (after) and
``save`` use the QAT model for ``qat.bits``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import hfx
from hfx.data.collate import collator_for_task, tokenize_for_task
from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json, atomic_write_text
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop
from hfx.tables import markdown_table, print_table
from hfx_plugins.qat.apply import apply as apply_qat
from hfx_plugins.qat.fake import convert
from hfx_plugins.qat.io import as_quant_config, save_packed

__all__ = ["QatRecipe"]


class QatRecipe(Recipe):
    """What ``hfx run plugin=qat`` does: fp32 fine-tuning, then PTQ vs QAT (see the module docstring)."""

    def setup(self) -> None:
        """Load the data and the encoder with finetune's classification head.

        Raises:
            HfxError: no ``data.path``, or data lacking the text or label column.
        """
        ctx, d = self.ctx, self.ctx.run.data
        self.cfg = ctx.config("qat")
        if not d.path:
            raise HfxError("no data given; set data.path=<bundled name or file> (e.g. data.path=sentiment)")
        data = ctx.load_data([d.text_column, d.label_column])
        labels = sorted(set(data["train"]["label"]))
        base, self.tokenizer = ctx.load_model("base")
        # finetune's classification head (the plugin this recipe requires), as `hfx run plugin=finetune` builds it
        self.model = hfx.apply(base, "finetune", num_labels=max(len(labels), 2))
        self.train_set = tokenize_for_task(data["train"], self.tokenizer, "sequence-classification", d.max_length)
        self.eval_set = tokenize_for_task(data["eval"], self.tokenizer, "sequence-classification", d.max_length)
        self.collate = collator_for_task(self.tokenizer, "sequence-classification", seed=ctx.run.seed)
        self.rows: list[dict[str, Any]] = []
        self.after: dict[str, float] | None = None

    @torch.no_grad()
    def _eval(self, model: torch.nn.Module) -> tuple[dict[str, float], torch.Tensor]:
        """Accuracy, mean loss, and the logits of the eval set (N, C) in order."""
        model.eval()
        loader = DataLoader(self.eval_set, batch_size=self.ctx.run.train.eval_batch_size, collate_fn=self.collate)
        logits, loss, n = [], 0.0, 0
        for batch in loader:
            out = model(**batch)
            logits.append(out.logits)
            loss += out.loss.item() * batch["labels"].shape[0]
            n += batch["labels"].shape[0]
        all_logits = torch.cat(logits)  # (N, C)
        gold = torch.tensor(self.eval_set["labels"] if "labels" in self.eval_set.column_names else self.eval_set["label"])
        return {"accuracy": (all_logits.argmax(-1) == gold).float().mean().item(), "loss": loss / n}, all_logits

    def evaluate(self) -> dict[str, float]:
        """Accuracy and loss of the current model; after training, those of the QAT model kept."""
        return self.after if self.after is not None else self._eval(self.model)[0]

    def _train(self, model: torch.nn.Module, steps: int | None = None, lr: float | None = None) -> None:
        ctx = self.ctx
        if steps is not None:  # a later phase: its own step count and rate, no warm-up, no checkpoints
            train = dataclasses.replace(ctx.run.train, max_steps=steps, learning_rate=lr, warmup_steps=0,
                                        eval_every=0, save_every=0)
            ctx = dataclasses.replace(ctx, run=dataclasses.replace(ctx.run, train=train))
        TrainLoop(ctx, model, self.train_set, self.collate).run()

    def _row(self, method: str, bits: Any, model: torch.nn.Module, ref: dict[str, float], diff: Any = "") -> None:
        m, _ = self._eval(model)
        self.rows.append({"method": method, "bits": bits, "accuracy": m["accuracy"], "loss": m["loss"],
                          "accuracy change": m["accuracy"] - ref["accuracy"], "convert max diff": diff})
        self.ctx.print(f"  {method}: accuracy {m['accuracy']:.4f}")

    def train(self) -> dict[str, float]:
        """fp32 fine-tuning, then PTQ vs QAT at each of ``qat.compare_bits``, one table row each."""
        cfg, ctx = self.cfg, self.ctx
        self._train(self.model)  # 1. fp32 fine-tuning
        fp32, _ = self._eval(self.model)
        self.rows.append({"method": "fp32", "bits": 32, "accuracy": fp32["accuracy"], "loss": fp32["loss"],
                          "accuracy change": 0.0, "convert max diff": ""})
        qcfg = as_quant_config(cfg)
        own = None
        for bits in cfg.compare_bits:  # 2. PTQ vs QAT at each bit width
            for steps, label in ((0, "min/max"), (20, "clip search")):
                ptq = hfx.apply(copy.deepcopy(self.model), "quant", cfg=dataclasses.replace(qcfg, bits=bits, clip_steps=steps))
                self._row(f"PTQ int{bits} g{cfg.group_size} ({label})", bits, ptq, fp32)
            qat = apply_qat(copy.deepcopy(self.model), dataclasses.replace(cfg, bits=bits))
            self._train(qat, cfg.qat_steps, cfg.qat_learning_rate)
            _, fake_logits = self._eval(qat)
            packed = convert(qat)
            _, packed_logits = self._eval(packed)
            diff = (packed_logits - fake_logits).abs().max().item()
            self._row(f"QAT int{bits} g{cfg.group_size} -> convert", bits, packed, fp32, diff)
            if bits == cfg.bits:
                own = packed
        control = copy.deepcopy(self.model)  # 3. the same extra steps in fp32
        self._train(control, cfg.qat_steps, cfg.qat_learning_rate)
        self._row(f"fp32 + {cfg.qat_steps} more steps (control)", 32, control, fp32)
        for bits in cfg.compare_bits:  # PTQ of the control too: the same training budget as QAT, then quantized
            ptq = hfx.apply(copy.deepcopy(control), "quant", cfg=dataclasses.replace(qcfg, bits=bits, clip_steps=20))
            self._row(f"control -> PTQ int{bits} g{cfg.group_size} (clip search)", bits, ptq, fp32)
        if ctx.is_main:
            print_table(f"QAT vs PTQ on {ctx.run.model}, {ctx.run.data.path} (accuracy on {len(self.eval_set)} eval examples)",
                        self.rows)
        if own is None:  # qat.bits not among compare_bits: train it too
            own = apply_qat(copy.deepcopy(self.model), cfg)
            self._train(own, cfg.qat_steps, cfg.qat_learning_rate)
            own = convert(own)
        self.model = own
        self.after = self._eval(own)[0]
        return {"convert_max_diff": max(r["convert max diff"] for r in self.rows if r["convert max diff"] != "")}

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``model/`` (packed, with its tokenizer) and ``qat_table.json`` / ``.md``."""
        path = out_dir / "model"
        with atomic_dir(path) as tmp:
            save_packed(self.model, tmp, self.cfg)
            self.tokenizer.save_pretrained(tmp)
        atomic_write_json(out_dir / "qat_table.json", self.rows)
        atomic_write_text(out_dir / "qat_table.md", markdown_table(self.rows))
        return [path, out_dir / "qat_table.json", out_dir / "qat_table.md"]
