"""``hfx run plugin=icl``: one table of in-context learning on the bundled tasks, nothing trained.

Rows (``configs/default.yaml``, smollm2-135m):

- ``sentiment_foobar`` (label words foo/bar, which the model has no prior for), multiple choice scored as
  lm-eval does (``acc``, ``acc_norm``): zero-shot; a zero-shot control with the words negative/positive;
  k-shot with lm-eval's seeded random sampler; k-shot with the k nearest examples (KATE, minilm).
- ``arithmetic_cot`` (exact match of the extracted number): zero-shot and k-shot direct answers; k-shot
  chain of thought, greedy and with self-consistency (``icl.repeats`` chains at ``icl.temperature``; with
  ``icl.vote_sizes`` one row per vote size, from one sampling). ``preset=cot``: these rows alone, on all 64
  problems, at 1, 5 and 10 chains.

Every row gives its n and the Wilson 95% interval of its score (``hfx.metrics.proportion``).

Nothing trains, so the recipe is a comparison: the runner calls ``compare()`` (the whole table, returned as
the run's metrics) where a training recipe's ``train()`` goes, and ``evaluate()`` before and after it has no
trained state to measure (it returns no metrics). ``artifacts/icl_table.json`` and ``icl_table.md`` hold the
table.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from hfx.io import atomic_write_json, atomic_write_text
from hfx.metrics import proportion
from hfx.registry import Recipe
from hfx.tables import markdown_table, print_table
from hfx_plugins.icl.tasks import (
    evaluate_classification,
    evaluate_cot,
    load_classification_task,
    load_cot_task,
)

__all__ = ["IclRecipe", "table_markdown"]

_COLUMNS = ("task", "prompting", "k", "selection", "metric", "score", "95% CI", "n", "notes", "seconds")


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (scores with 3 decimals, other values as they are)."""
    return markdown_table(rows, columns=_COLUMNS, float_format="", formats={"score": ".3f"})


def _ci_text(score: float, n: int) -> str:
    """Wilson 95% interval of ``score`` (a share of ``n`` problems or queries) as "[lo, hi]"."""
    if not n:
        return ""
    lo, hi = proportion(score, n).ci95
    return f"[{lo:.3f}, {hi:.3f}]"


class IclRecipe(Recipe):
    """setup (model, tasks) -> compare (the table, one row per prompt setting) -> save (the table).

    ``evaluate`` returns nothing: in-context learning changes no weights, so there is no before and after.
    """

    def setup(self) -> None:
        """Load the causal LM (eval mode), the classification task (if ``icl.classification_task``) and the
        chain-of-thought task, each cut to its limit.

        Raises:
            HfxError: a bundled set that is not a classification or chain-of-thought task (its columns), or
                what ``hfx.data.load_bundled`` raises for an unknown name.
        """
        ctx = self.ctx
        self.cfg = ctx.config("icl")
        self.model, self.tokenizer = ctx.load_model("causal-lm")
        self.model.eval()
        self.cls_task = (load_classification_task(self.cfg.classification_task, self.cfg.classification_limit)
                         if self.cfg.classification_task else None)
        self.cot_task = load_cot_task(self.cfg.cot_task, self.cfg.cot_limit)
        self.rows: list[dict[str, Any]] = []
        self.metrics: dict[str, float] = {}
        self.seconds = 0.0
        cls = f"{self.cls_task.name} {len(self.cls_task.test)} queries (pool {len(self.cls_task.train)}), " \
            if self.cls_task else ""
        ctx.print(f"icl: {ctx.run.model}; {cls}{self.cot_task.name} {len(self.cot_task.test)} problems")

    def _cfg(self, **changes: Any) -> Any:
        return dataclasses.replace(self.cfg, **changes)

    def _add(self, task: str, prompting: str, k: int, selection: str, res: dict[str, float], metric: str) -> None:
        notes = f"acc_norm {res['acc_norm']:.3f}" if "acc_norm" in res else (
            f"pattern misses {res['pattern_misses']}/{res['chains']}, invalid {res['invalid']}")
        if res.get("dropped_examples"):
            notes += f", {res['dropped_examples']} examples dropped to fit"
        score = float(res[metric])
        row = {"task": task, "prompting": prompting, "k": k, "selection": selection, "metric": metric,
               "score": score, "95% CI": _ci_text(score, res["n"]), "n": res["n"], "notes": notes,
               "seconds": round(res["seconds"], 1)}
        self.rows.append(row)
        self.metrics[f"{task} {prompting} k={k} {selection} {metric}".replace("  ", " ")] = row["score"]
        self.ctx.print(f"  {task:<17} {prompting:<28} k={k} {selection:<8} {metric} {row['score']:.3f} "
                       f"{row['95% CI']} of {row['n']}  ({notes}; {row['seconds']} s)")

    def evaluate(self) -> dict[str, float]:
        """No metrics: nothing trains, so the model before and after the comparison is the same model."""
        return {}

    @torch.no_grad()
    def compare(self) -> dict[str, float]:
        """Score every prompt setting (the rows in the module docstring); return ``{row name: score}``."""
        self.rows, self.metrics = [], {}
        m, tok, cls, cot, k = self.model, self.tokenizer, self.cls_task, self.cot_task, self.cfg.num_fewshot
        started = time.perf_counter()
        if cls is not None:
            self._classification_rows(cls)
        name = cot.name
        if self.cfg.direct_rows:
            self._add(name, "zero-shot direct answer", 0, "-",
                      evaluate_cot(m, tok, cot, self._cfg(num_fewshot=0), "direct"), "accuracy")
            self._add(name, "few-shot direct answer", k, "first_n", evaluate_cot(m, tok, cot, self.cfg, "direct"),
                      "accuracy")
        self._add(name, "chain of thought, greedy", k, "first_n", evaluate_cot(m, tok, cot, self.cfg, "cot"), "accuracy")
        if self.cfg.self_consistency:
            res = evaluate_cot(m, tok, cot, self.cfg, "cot", self_consistency_vote=True, vote_sizes=self.cfg.vote_sizes)
            for size, vote in res["votes"].items():  # one sampling; the majority of its first `size` chains
                self._add(name, f"chain of thought, maj@{size}", k, "first_n", {**res, **vote}, "accuracy")
        self.seconds = time.perf_counter() - started
        self._print_table()
        return self.metrics

    def _classification_rows(self, cls: Any) -> None:
        m, tok, k, name = self.model, self.tokenizer, self.cfg.num_fewshot, cls.name
        self._add(name, "zero-shot", 0, "-", evaluate_classification(m, tok, cls, self._cfg(num_fewshot=0)), "acc")
        if self.cfg.natural_labels:
            words = list(self.cfg.natural_labels)
            res = evaluate_classification(m, tok, cls, self._cfg(num_fewshot=0), label_words=words)
            self._add(name, f"zero-shot, words {'/'.join(words)}", 0, "-", res, "acc")
        for selection in ("random", "knn"):
            res = evaluate_classification(m, tok, cls, self._cfg(fewshot_selection=selection))
            self._add(name, "few-shot", k, selection, res, "acc")

    def _prompting(self) -> str:
        """How the prompts were rendered: plain text, or the chat template with its few-shot layout."""
        if not self.cfg.apply_chat_template:
            return "plain text"
        return "chat template, " + ("examples as turns" if self.cfg.fewshot_as_multiturn else "one user turn")

    def _print_table(self) -> None:
        if self.ctx.is_main:
            print_table(f"in-context learning on {self.ctx.run.model}, {self._prompting()} ({self.seconds:.0f} s)",
                        self.rows,
                        columns=_COLUMNS, float_format="", formats={"score": ".3f"}, min_width=150)

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``icl_table.json`` (model, seconds, rows) and ``icl_table.md`` (the same table); returns both paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "icl_table.json", {"model": self.ctx.run.model, "prompts": self._prompting(),
                                                       "seconds": round(self.seconds, 1), "rows": self.rows})
        atomic_write_text(out_dir / "icl_table.md", table_markdown(self.rows))
        return [out_dir / "icl_table.json", out_dir / "icl_table.md"]
