"""``hfx run plugin=quant``: what quantization costs, measured, beside bitsandbytes on the same layers and text.

1. ``evaluate`` (before): fp32 perplexity on ``quant.eval_windows`` windows of 512 tokens of
   ``pydoc_data.topics`` (a decoder), or nothing but the embedding table (an encoder).
2. ``train``: one row per ``quant.table`` entry (hfx, packed) and per bitsandbytes layout: bits per
   parameter of the quantized layers counting scales and zero points, bytes of the model (in memory, and
   on disk for hfx's safetensors), perplexity and its change vs fp32. Then sentence-embedding agreement
   with fp32 on ``quant.embedding_model`` (minilm: original fp32 weights, see the caveat below), and the
   float-format table with the error of casting this model's linear weights to each format.
3. ``evaluate`` (after): the model quantized with the run's own ``quant.*`` settings; ``save`` writes it.

Caveat printed with the table: smollm2-135m's weights come from a Q4_1 GGUF file, so each block of 32
inputs already lies on a 4-bit grid; its perplexity losses flatter any 4-bit scheme, which is why the
minilm embedding rows are the honest second measurement (GUIDE, "Pitfalls for honest measurement").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hfx.data.text import pydoc_sentences, pydoc_token_windows
from hfx.io import atomic_dir, atomic_write_json, atomic_write_text
from hfx.models.loading import load_config, load_model, model_family
from hfx.models.zoo import resolve_model
from hfx.registry import Recipe
from hfx_plugins.quant.apply import apply, select_linear, storage_summary
from hfx_plugins.quant.formats import FORMATS, cast_error
from hfx_plugins.quant.io import save as save_quantized
from hfx_plugins.quant.layer import linear_weight
from hfx_plugins.quant.measure import (
    bnb_bits_per_param,
    bnb_quantize,
    disk_bytes,
    embed,
    embedding_agreement,
    perplexity,
)

__all__ = ["QuantRecipe", "markdown_table", "print_table"]

CAVEAT = ("smollm2-135m's weights come from a Q4_1 GGUF (4-bit grid per 32 inputs): its 4-bit perplexity "
          "losses flatter every 4-bit scheme; see the minilm embedding rows (original fp32 weights).")


def print_table(ctx: Any, title: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not ctx.is_main or not rows:
        return
    table = Table(title=title)
    for k in rows[0]:
        table.add_column(k, justify="left" if k in ("method", "format", "groups") else "right")
    for r in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()])
    Console().print(table)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                                           for v in r.values()) + " |\n" for r in rows)


def _groups_note(group: int, in_features: set[int]) -> str:
    if group <= 0:
        return "per channel" if group == 0 else "per tensor"
    short = sorted(i for i in in_features if i % group)
    return f"g{group}" + (f" (short last group for in={short})" if short else "")


class QuantRecipe(Recipe):
    def setup(self) -> None:
        ctx = self.ctx
        self.cfg = ctx.config("quant")
        self.family = model_family(load_config(resolve_model(ctx.run.model)))
        self.task = "causal-lm" if self.family == "decoder" else "base"
        self.model, self.tokenizer = ctx.load_model(self.task)
        self.windows = pydoc_token_windows(self.tokenizer, 512, self.cfg.eval_windows) if self.task == "causal-lm" else None
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.cached_after: dict[str, float] | None = None
        self.fp32_ppl: float | None = None
        self.row_ppl: dict[str, float] = {}
        ctx.print(f"quant: {ctx.run.model} ({self.family}); {len(select_linear(self.model, self.cfg.target_modules, self.cfg.exclude_modules))} "
                  f"linear layers to quantize; {self.cfg.bits}-bit, group_size={self.cfg.group_size}")

    def _fresh(self) -> Any:
        return self.ctx.load_model(self.task)[0].eval()

    def evaluate(self) -> dict[str, float]:
        if self.cached_after is not None:
            return self.cached_after
        if self.windows is None:
            return {}
        ppl = perplexity(self.model, self.windows)
        if self.fp32_ppl is None:
            self.fp32_ppl = ppl  # the first evaluation is the fp32 model's
        return {"perplexity": ppl}

    def _ppl_rows(self) -> list[dict[str, Any]]:
        ctx, cfg = self.ctx, self.cfg
        base = self._fresh()
        names = select_linear(base, cfg.target_modules, cfg.exclude_modules)
        ins = {linear_weight(base.get_submodule(n)).shape[1] for n in names}
        fp32 = self.fp32_ppl if self.fp32_ppl is not None else perplexity(base, self.windows)
        rows = [{"method": "fp32", "groups": "", "bits/param": 32.0, "MB (memory)": storage_summary(base)["model_bytes"] / 1e6,
                 "MB (disk)": disk_bytes(lambda m, p: m.save_pretrained(p), base) / 1e6, "perplexity": fp32, "change %": 0.0}]
        del base
        for entry in cfg.table:
            bits, group = (int(x) for x in entry.split(":"))
            row_cfg = dataclasses.replace(cfg, bits=bits, group_size=group)
            model = apply(self._fresh(), row_cfg)
            s = storage_summary(model)
            ppl = perplexity(model, self.windows)
            self.row_ppl[entry] = ppl
            rows.append({"method": f"hfx int{bits}", "groups": _groups_note(group, ins), "bits/param": s["bits_per_param"],
                         "MB (memory)": s["model_bytes"] / 1e6, "MB (disk)": disk_bytes(lambda m, p, c=row_cfg: save_quantized(m, p, c), model) / 1e6,
                         "perplexity": ppl, "change %": 100 * (ppl / fp32 - 1)})
            ctx.print(f"  {rows[-1]['method']} {rows[-1]['groups']}: perplexity {ppl:.3f}")
        if cfg.reference_rows:
            for kind in ("int8", "nf4", "fp4"):
                model = bnb_quantize(self._fresh(), kind, names)
                ppl = perplexity(model, self.windows)
                mem = sum(t.numel() * t.element_size() for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())
                rows.append({"method": f"bnb {kind}", "groups": "per channel" if kind == "int8" else "bs64",
                             "bits/param": bnb_bits_per_param(kind), "MB (memory)": mem / 1e6, "MB (disk)": "-",
                             "perplexity": ppl, "change %": 100 * (ppl / fp32 - 1)})
                ctx.print(f"  bnb {kind}: perplexity {ppl:.3f}")
        return rows

    def _embedding_rows(self, name: str) -> list[dict[str, Any]]:
        cfg = self.cfg
        sentences = pydoc_sentences(40, 300)[:600]
        base, tok = load_model(name, "base")
        ref = embed(base, tok, sentences)
        names = select_linear(base, "all-linear", [])
        rows = []
        for entry in cfg.table:
            bits, group = (int(x) for x in entry.split(":"))
            for steps in (0, cfg.clip_steps):
                model = apply(load_model(name, "base")[0], dataclasses.replace(cfg, bits=bits, group_size=group,
                                                                                 clip_steps=steps, target_modules="all-linear", exclude_modules=[]))
                rows.append({"method": f"hfx int{bits} {'min/max' if steps == 0 else 'clip search'}",
                             "groups": _groups_note(group, set()), **embedding_agreement(ref, embed(model, tok, sentences))})
                if cfg.clip_steps == 0:
                    break
        if cfg.reference_rows:
            for kind in ("int8", "nf4", "fp4"):
                model = bnb_quantize(load_model(name, "base")[0], kind, names)
                rows.append({"method": f"bnb {kind}", "groups": "per channel" if kind == "int8" else "bs64",
                             **embedding_agreement(ref, embed(model, tok, sentences))})
        return rows

    def _format_rows(self) -> list[dict[str, Any]]:
        weights = [linear_weight(self.model.get_submodule(n)) for n in select_linear(self.model, "all-linear", [])]
        rows = []
        for fmt in FORMATS:
            d = fmt.describe()
            raw, scaled = cast_error(weights, fmt), cast_error(weights, fmt, scaled=True)
            rows.append({"format": d["format"], "e/m bits": f"{d['exponent']}/{d['mantissa']}", "max": d["max"],
                         "min normal": d["min_normal"], "epsilon": d["epsilon"], "weight rel. error": raw["rel_error"],
                         "underflow %": 100 * raw["underflow"], "rel. error (scaled)": scaled["rel_error"]})
        return rows

    def train(self) -> dict[str, float]:
        ctx, cfg = self.ctx, self.cfg
        if cfg.formats:
            self.tables["formats"] = self._format_rows()
            print_table(ctx, f"float formats; error of casting {ctx.run.model}'s linear weights (scaled = per-tensor absmax scale)",
                        self.tables["formats"])
        if self.windows is not None:
            self.tables["perplexity"] = self._ppl_rows()
            print_table(ctx, f"{ctx.run.model}: perplexity on {cfg.eval_windows} x 512 tokens of pydoc_data.topics",
                        self.tables["perplexity"])
            if ctx.run.model == "smollm2-135m":
                ctx.print("caveat: " + CAVEAT)
        emb = ctx.run.model if self.family == "encoder" else cfg.embedding_model
        if emb:
            self.tables["embeddings"] = self._embedding_rows(emb)
            print_table(ctx, f"{emb}: embeddings of 600 pydoc sentences vs fp32", self.tables["embeddings"])
        self.model = apply(self.model, cfg)  # the run's own setting, evaluated "after" and saved
        s = storage_summary(self.model)
        own = f"{cfg.bits}:{cfg.group_size}"
        if own in self.row_ppl and cfg.activations == "none":  # the same quantization was measured in the table
            self.cached_after = {"perplexity": self.row_ppl[own]}
        else:
            self.cached_after = {"perplexity": perplexity(self.model, self.windows)} if self.windows is not None else {}
        return {"bits_per_param": s["bits_per_param"], "model_MB": s["model_bytes"] / 1e6}

    def save(self, out_dir: Path) -> list[Path]:
        path = out_dir / "model"
        with atomic_dir(path) as tmp:
            save_quantized(self.model, tmp, self.cfg)
            self.tokenizer.save_pretrained(tmp)
        atomic_write_json(out_dir / "quant_tables.json", self.tables)
        md = "".join(f"## {k}\n\n{markdown_table(v)}\n" for k, v in self.tables.items())
        if "perplexity" in self.tables and self.ctx.run.model == "smollm2-135m":
            md += f"Caveat: {CAVEAT}\n"
        atomic_write_text(out_dir / "quant_tables.md", md)
        return [path, out_dir / "quant_tables.json", out_dir / "quant_tables.md"]
