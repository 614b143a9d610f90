"""``hfx run plugin=quant``: what quantization costs, measured, beside bitsandbytes on the same layers and text.

1. ``evaluate`` (before): fp32 perplexity on ``quant.eval_windows`` windows of ``quant.eval_window`` tokens of
   ``pydoc_data.topics`` (a decoder); an encoder gets only the embedding table.
2. ``compare`` (nothing is trained; the runner calls it in ``train()``'s place): the float-format table with the error of casting this model's linear
   weights; one row per ``quant.table`` entry and per bitsandbytes layout with bits per parameter counting
   scales and zero points, megabytes in memory and on disk, perplexity and its change vs fp32; then the
   sentence-embedding agreement with fp32 on ``quant.embedding_model`` (see :data:`tables.CAVEAT`).
   GPTQ entries ("4:128:gptq") are calibrated on pydoc text disjoint from what is evaluated: the tokens that
   follow the evaluation windows, and the sentences that follow the 600 evaluated ones (:mod:`.calibration`).
3. ``evaluate`` (after): the model quantized with the run's own ``quant.*`` settings; ``save`` writes it
   (safetensors, see :mod:`.io`) with the tokenizer, and the tables as JSON and Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hfx.data.text import pydoc_token_windows
from hfx.io import atomic_dir, atomic_write_json, atomic_write_text
from hfx.models.loading import load_config, model_family
from hfx.models.zoo import resolve_model
from hfx.registry import Recipe
from hfx.tables import markdown_table, print_table
from hfx_plugins.quant.apply import apply, select_linear, storage_summary
from hfx_plugins.quant.calibration import lm_calibration, sentence_calibration
from hfx_plugins.quant.io import save as save_quantized
from hfx_plugins.quant.measure import perplexity
from hfx_plugins.quant.tables import (
    CAVEAT,
    embedding_rows,
    entry_key,
    format_rows,
    has_gptq_entries,
    ppl_rows,
)

__all__ = ["QuantRecipe"]


class QuantRecipe(Recipe):
    def setup(self) -> None:
        """Load the model for its family (decoder: causal LM + perplexity windows; encoder: base)."""
        ctx = self.ctx
        self.cfg = ctx.config("quant")
        self.family = model_family(load_config(resolve_model(ctx.run.model)))
        self.task = "causal-lm" if self.family == "decoder" else "base"
        self.model, self.tokenizer = ctx.load_model(self.task)
        self.windows = pydoc_token_windows(self.tokenizer, self.cfg.eval_window, self.cfg.eval_windows) if self.task == "causal-lm" else None
        self.calibration: list[Any] | None = None  # built when a GPTQ setting needs it (see calibrate)
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.after: dict[str, float] | None = None
        self.fp32_ppl: float | None = None
        n = len(select_linear(self.model, self.cfg.target_modules, self.cfg.exclude_modules))
        ctx.print(f"quant: {ctx.run.model} ({self.family}); {n} linear layers to quantize; "
                  f"{self.cfg.bits}-bit, group_size={self.cfg.group_size}, method={self.cfg.method}")

    def calibrate(self) -> list[Any]:
        """GPTQ calibration batches, disjoint from the evaluated text (see :mod:`.calibration`)."""
        if self.calibration is None:
            if self.windows is not None:  # the tokens after the evaluation windows
                self.calibration = lm_calibration(self.tokenizer, self.cfg, self.windows.numel())
            else:  # an encoder: the sentences after the 600 of the embedding table
                self.calibration = sentence_calibration(self.tokenizer, self.cfg)
        return self.calibration

    def evaluate(self) -> dict[str, float]:
        """Perplexity on the pydoc windows (decoders; the first call is fp32's); then the quantized one."""
        if self.after is not None:
            return self.after
        if self.windows is None:
            return {}
        ppl = perplexity(self.model, self.windows)
        if self.fp32_ppl is None:
            self.fp32_ppl = ppl  # the first evaluation is the fp32 model's
        return {"perplexity": ppl}

    def compare(self) -> dict[str, float]:
        """The tables (float formats, perplexity beside bitsandbytes, embedding agreement), then the run's own
        setting applied to the model (evaluated "after" and saved); ``hfx run`` calls it in ``train()``'s place."""
        return self._quantize_own(self._tables())

    def _tables(self) -> dict[str, float]:
        """Build and print every table; returns the perplexity of each ``quant.table`` entry by key."""
        ctx, cfg = self.ctx, self.cfg
        show = print_table if ctx.is_main else (lambda *a: None)
        if cfg.formats:
            self.tables["formats"] = format_rows(self.model)
            show(f"float formats; error of casting {ctx.run.model}'s linear weights (scaled: per-tensor absmax scale)",
                 self.tables["formats"])
        by_entry: dict[str, float] = {}
        gptq_rows = has_gptq_entries(cfg)
        if self.windows is not None:
            fresh = lambda: ctx.load_model(self.task)[0].eval()  # noqa: E731
            self.tables["perplexity"], by_entry = ppl_rows(fresh, self.windows, cfg, self.fp32_ppl, ctx.print,
                                                           calibration=self.calibrate() if gptq_rows else None)
            caption = f"{ctx.run.model}: perplexity on {cfg.eval_windows} x {cfg.eval_window} tokens of pydoc_data.topics"
            if gptq_rows:
                caption += (f"; GPTQ calibrated on the {cfg.calibration_samples} x {cfg.calibration_window} tokens "
                            "that follow them (disjoint)")
            show(caption, self.tables["perplexity"])
            if ctx.run.model == "smollm2-135m":
                ctx.print("caveat: " + CAVEAT)
        emb = ctx.run.model if self.family == "encoder" else cfg.embedding_model
        if emb:
            self.tables["embeddings"] = embedding_rows(emb, cfg, log=ctx.print)
            show(f"{emb}: embeddings of 600 pydoc sentences vs fp32" + (
                f"; GPTQ calibrated on the {cfg.calibration_sentences} sentences after them (disjoint)"
                if gptq_rows else ""), self.tables["embeddings"])
        return by_entry

    def _quantize_own(self, by_entry: dict[str, float]) -> dict[str, float]:
        """The run's own ``quant.*`` setting on the model, evaluated "after" (the table's perplexity when it has the
        same setting, ``by_entry``); returns its bits per parameter and size."""
        cfg = self.cfg
        self.model = apply(self.model, cfg, calibration=self.calibrate() if cfg.method == "gptq" else None)
        own = entry_key(cfg.bits, cfg.group_size, cfg.method)
        if own in by_entry and cfg.activations == "none":  # measured already in the table
            self.after = {"perplexity": by_entry[own]}
        else:
            self.after = {"perplexity": perplexity(self.model, self.windows)} if self.windows is not None else {}
        s = storage_summary(self.model)
        return {"bits_per_param": s["bits_per_param"], "model_MB": s["model_bytes"] / 1e6}

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``model/`` (packed, with its tokenizer) and ``quant_tables.json`` / ``.md``."""
        path = out_dir / "model"
        with atomic_dir(path) as tmp:
            save_quantized(self.model, tmp, self.cfg)
            self.tokenizer.save_pretrained(tmp)
        atomic_write_json(out_dir / "quant_tables.json", self.tables)
        md = "".join(f"## {k}\n\n{markdown_table(v)}\n" for k, v in self.tables.items())
        cfg = self.cfg
        if has_gptq_entries(cfg):
            md += (f"GPTQ rows: calibrated on the {cfg.calibration_samples} x {cfg.calibration_window} pydoc tokens "
                   f"after the {cfg.eval_windows} evaluated windows, and (embeddings) on the "
                   f"{cfg.calibration_sentences} sentences after the 600 evaluated ones: disjoint from the evaluation.\n")
        if "perplexity" in self.tables and self.ctx.run.model == "smollm2-135m":
            md += f"Caveat: {CAVEAT}\n"
        atomic_write_text(out_dir / "quant_tables.md", md)
        return [path, out_dir / "quant_tables.json", out_dir / "quant_tables.md"]
