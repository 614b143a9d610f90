"""The comparison tables of ``hfx run plugin=quant`` and ``benchmarks/quant_vs_bnb.py`` (same code for both).

- :func:`ppl_rows`: perplexity, bits per parameter and bytes, for fp32, each hfx setting (round to nearest, or
  GPTQ calibrated on text disjoint from the evaluated windows), and bitsandbytes int8 / nf4 / fp4 on the same
  layers and the same token windows;
- :func:`embedding_rows`: sentence-embedding agreement with fp32 on an encoder (minilm: original fp32
  weights, the honest second measurement, see :data:`CAVEAT`);
- :func:`format_rows`: each float format's range and precision, and the error of casting a model's weights.

The rows are printed and written as Markdown by :mod:`hfx.tables`, as every result table is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hfx.data.text import pydoc_sentences
from hfx.errors import HfxError
from hfx_plugins.quant.apply import apply, select_linear, storage_summary
from hfx_plugins.quant.calibration import sentence_calibration
from hfx_plugins.quant.config import QuantRunConfig, parse_table_entry
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

__all__ = ["CAVEAT", "embedding_rows", "entry_key", "format_rows", "groups_note", "has_gptq_entries", "ppl_rows"]

CAVEAT = ("smollm2-135m's weights come from a Q4_1 GGUF (4-bit grid per 32 inputs): its 4-bit perplexity "
          "losses flatter every 4-bit scheme; see the minilm embedding rows (original fp32 weights).")
Row = dict[str, Any]


def groups_note(group: int, in_features: set[int]) -> str:
    """How a group size reads in a table: ``per channel`` (0), ``per tensor`` (-1) or ``g<size>``, naming the
    input widths it does not divide (their last group is short).
    """
    if group <= 0:
        return "per channel" if group == 0 else "per tensor"
    short = sorted(i for i in in_features if i % group)
    return f"g{group}" + (f" (short last group for in={short})" if short else "")


def _entries(cfg: QuantRunConfig) -> list[tuple[str, int, int, str]]:
    """(entry, bits, group_size, method) for every ``cfg.table`` entry."""
    return [(e, *parse_table_entry(e)) for e in cfg.table]


def has_gptq_entries(cfg: QuantRunConfig) -> bool:
    """Whether any ``cfg.table`` row is GPTQ (and so needs calibration batches)."""
    return any(method == "gptq" for *_, method in _entries(cfg))


def entry_key(bits: int, group_size: int, method: str) -> str:
    """The table entry naming a setting: "4:128" (round to nearest) or "4:128:gptq"."""
    return f"{bits}:{group_size}" + ("" if method == "rtn" else f":{method}")


def _label(bits: int, method: str) -> str:
    return f"hfx int{bits}" + ("" if method == "rtn" else f" {method}")


def _bnb_model_bytes(model: nn.Module) -> int:
    """Bytes of every tensor, plus the scales bitsandbytes keeps beside its weights (SCB, quant_state.absmax)."""
    total = sum(t.numel() * t.element_size() for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())
    for m in model.modules():
        w = getattr(m, "weight", None)
        extra = getattr(w, "SCB", None) if w is not None else None
        state = getattr(w, "quant_state", None) if w is not None else None
        for t in (extra, getattr(state, "absmax", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def ppl_rows(fresh: Callable[[], nn.Module], windows: torch.Tensor, cfg: QuantRunConfig, fp32_ppl: float | None = None,
             log: Callable[[str], None] = print, reference_kinds: tuple[str, ...] = ("int8", "nf4", "fp4"),
             calibration: list[torch.Tensor] | None = None) -> tuple[list[Row], dict[str, float]]:
    """Rows for fp32, every ``cfg.table`` entry and (``cfg.reference_rows``) bitsandbytes; ``fresh()`` loads fp32.

    ``calibration`` (input_ids batches, disjoint from ``windows``: :func:`.calibration.lm_calibration`) is
    required by the GPTQ entries. ``quantize s`` is the wall time of quantizing the model.

    Returns:
        The rows (method, groups, bits/param, MB in memory and on disk, seconds, perplexity, change in %) and the
        perplexity of each table entry by key.

    Raises:
        HfxError: GPTQ entries without ``calibration``, and what quantizing a row raises.
    """
    if calibration is None and has_gptq_entries(cfg):
        raise HfxError("the quant.table has GPTQ entries but no calibration batches were given")
    base = fresh()
    names = select_linear(base, cfg.target_modules, cfg.exclude_modules)
    ins = {linear_weight(base.get_submodule(n)).shape[1] for n in names}
    fp32 = fp32_ppl if fp32_ppl is not None else perplexity(base, windows)
    rows = [{"method": "fp32", "groups": "", "bits/param": 32.0, "MB (memory)": storage_summary(base)["model_bytes"] / 1e6,
             "MB (disk)": disk_bytes(lambda m, p: m.save_pretrained(p), base) / 1e6, "quantize s": 0.0,
             "perplexity": fp32, "change %": 0.0}]
    del base
    by_entry: dict[str, float] = {}
    for _, bits, group, method in _entries(cfg):
        row_cfg = dataclasses.replace(cfg, bits=bits, group_size=group, method=method)
        model = fresh()
        start = time.perf_counter()
        model = apply(model, row_cfg, calibration=calibration if method == "gptq" else None)
        secs = time.perf_counter() - start
        s = storage_summary(model)
        by_entry[entry_key(bits, group, method)] = ppl = perplexity(model, windows)
        rows.append({"method": _label(bits, method), "groups": groups_note(group, ins),
                     "bits/param": s["bits_per_param"], "MB (memory)": s["model_bytes"] / 1e6,
                     "MB (disk)": disk_bytes(lambda m, p, c=row_cfg: save_quantized(m, p, c), model) / 1e6,
                     "quantize s": secs, "perplexity": ppl, "change %": 100 * (ppl / fp32 - 1)})
        log(f"  {_label(bits, method)} {groups_note(group, ins)}: perplexity {ppl:.3f} (quantized in {secs:.0f} s)")
    if cfg.reference_rows:
        for kind in reference_kinds:
            model = bnb_quantize(fresh(), kind, names)
            ppl = perplexity(model, windows)
            mem = _bnb_model_bytes(model)
            rows.append({"method": f"bnb {kind}", "groups": "per channel" if kind == "int8" else "bs64",
                         "bits/param": bnb_bits_per_param(kind), "MB (memory)": mem / 1e6, "MB (disk)": "-",
                         "quantize s": "-", "perplexity": ppl, "change %": 100 * (ppl / fp32 - 1)})
            log(f"  bnb {kind}: perplexity {ppl:.3f}")
    return rows, by_entry


def embedding_rows(name: str, cfg: QuantRunConfig, n_sentences: int = 600, log: Callable[[str], None] = print) -> list[Row]:
    """Embedding agreement with fp32 on ``n_sentences`` pydoc sentences, every linear layer of ``name`` quantized.

    Round-to-nearest entries give two rows (min/max, then the configured clip search); GPTQ entries one, calibrated
    on the ``cfg.calibration_sentences`` sentences after the evaluated ones (:func:`.calibration.sentence_calibration`).
    """
    from hfx.models.loading import load_model

    sentences = pydoc_sentences(40, 300)[:n_sentences]
    base, tok = load_model(name, "base")
    ref = embed(base, tok, sentences)
    names = select_linear(base, "all-linear", [])
    calibration = None
    rows = []
    for _, bits, group, method in _entries(cfg):
        search = "min/max" if cfg.clip_steps == 0 else "clip search"
        for steps in dict.fromkeys((0, cfg.clip_steps)) if method == "rtn" else (cfg.clip_steps,):
            row_cfg = dataclasses.replace(cfg, bits=bits, group_size=group, clip_steps=steps, method=method,
                                          target_modules="all-linear", exclude_modules=[])
            if method == "gptq" and calibration is None:
                calibration = sentence_calibration(tok, cfg, n_evaluated=n_sentences)
            model = apply(load_model(name, "base")[0], row_cfg, calibration=calibration if method == "gptq" else None)
            label = f"hfx int{bits} {'min/max' if steps == 0 else 'clip search'}" if method == "rtn" else \
                f"hfx int{bits} {method} ({search})"
            rows.append({"method": label, "groups": groups_note(group, set()),
                         **embedding_agreement(ref, embed(model, tok, sentences))})
            log(f"  {rows[-1]['method']} {rows[-1]['groups']}: cosine {rows[-1]['cosine']:.4f}")
    if cfg.reference_rows:
        for kind in ("int8", "nf4", "fp4"):
            model = bnb_quantize(load_model(name, "base")[0], kind, names)
            rows.append({"method": f"bnb {kind}", "groups": "per channel" if kind == "int8" else "bs64",
                         **embedding_agreement(ref, embed(model, tok, sentences))})
            log(f"  bnb {kind}: cosine {rows[-1]['cosine']:.4f}")
    return rows


def format_rows(model: nn.Module) -> list[Row]:
    """Every float format, and the error of casting ``model``'s linear weights to it (raw and per-tensor scaled)."""
    weights = [linear_weight(model.get_submodule(n)) for n in select_linear(model, "all-linear", [])]
    rows = []
    for fmt in FORMATS:
        d = fmt.describe()
        raw, scaled = cast_error(weights, fmt), cast_error(weights, fmt, scaled=True)
        rows.append({"format": d["format"], "e/m bits": f"{d['exponent']}/{d['mantissa']}", "max": d["max"],
                     "min normal": d["min_normal"], "epsilon": d["epsilon"], "weight rel. error": raw["rel_error"],
                     "underflow %": 100 * raw["underflow"], "rel. error (scaled)": scaled["rel_error"]})
    return rows
