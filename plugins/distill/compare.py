"""The end-of-run comparison: teacher vs distilled student vs the same student trained without the teacher.

Also the pieces the no-teacher baseline needs: its loss for embeddings (SimCSE) and a run context that
keeps its metrics and checkpoints apart from the distilled student's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BaselineContext", "print_comparison", "simcse_loss"]


def simcse_loss(embed: Any, model: nn.Module, batch: dict[str, torch.Tensor], scale: float = 20.0) -> torch.Tensor:
    """Unsupervised SimCSE (Gao et al. 2021, https://arxiv.org/abs/2104.08821): learning without a teacher or labels.

    Each sentence is encoded twice; dropout (the model is in train mode) makes the two embeddings differ,
    and each must pick its own twin among the batch. This is sentence-transformers'
    ``MultipleNegativesRankingLoss`` (cosine similarity x scale 20, cross-entropy) on (s, s) pairs.
    """
    a = F.normalize(embed(model, batch), dim=-1)  # (B, H)
    b = F.normalize(embed(model, batch), dim=-1)  # (B, H), another dropout mask
    scores = scale * a @ b.T  # (B, B): row i's positive is column i
    return F.cross_entropy(scores, torch.arange(scores.shape[0], device=scores.device))


class _NoResume:
    """``ctx.run_dir`` for the baseline: never resumes (its checkpoints are not kept), logs go through."""

    def __init__(self, run_dir: Any) -> None:
        self._run_dir = run_dir
        self.resumed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run_dir, name)


class BaselineContext:
    """The run context as the no-teacher run sees it: metrics logged as ``no_teacher_*``, no checkpoints, and
    its own learning rate if given (a loss without a teacher may want another one)."""

    def __init__(self, ctx: Any, prefix: str = "no_teacher_", learning_rate: float = 0.0) -> None:
        self._ctx, self._prefix = ctx, prefix
        lr = learning_rate or ctx.run.train.learning_rate  # 0 = the distilled student's learning rate
        self.run = dataclasses.replace(ctx.run, train=dataclasses.replace(ctx.run.train, save_every=0, eval_every=0,
                                                                          learning_rate=lr))
        self.run_dir = _NoResume(ctx.run_dir)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def log(self, record: dict[str, Any]) -> None:
        """Log ``record`` to the run with each metric renamed ``<prefix><name>`` (``step`` kept)."""
        self._ctx.log({k if k == "step" else f"{self._prefix}{k}": v for k, v in record.items()})

    def progress(self, total: int, desc: str, initial: int = 0) -> Any:
        """The run's progress bar, its description marked ``(no teacher)``."""
        return self._ctx.progress(total=total, desc=f"{desc} (no teacher)", initial=initial)


def print_comparison(title: str, rows: list[dict[str, Any]]) -> None:
    """One table, a row per model; every row has the same keys (None = not measured)."""
    from hfx.tables import print_table

    cells = [{k: _fmt(v) for k, v in row.items()} for row in rows]  # thousands separators, "-" for None
    justify = {k: "left" if k == "model" else "right" for k in rows[0]} if rows else {}
    print_table(title, cells, justify=justify, min_width=140)  # wide enough for every column, even in a pipe


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):  # a 95% interval
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int) else str(v)
