"""End-of-run outputs: the curves plot and the results table (printed by :mod:`hfx.tables`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_curves", "print_results", "save_figure"]


def plot_curves(records: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Plot every logged series against the step (training loss on the left, evaluation on the right)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen on these machines
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    evals: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for k, v in r.items():
            if k.startswith("eval_") and isinstance(v, (int, float)):
                evals.setdefault(k[5:], []).append((r["step"], float(v)))
    if not train and not evals:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        axes[0].plot(*zip(*train, strict=True), label="train loss")
    axes[0].set(xlabel="optimizer step", ylabel="loss", title="training")
    for name, pts in evals.items():
        axes[1].plot(*zip(*pts, strict=True), marker="o", label=name)
    axes[1].set(xlabel="optimizer step", title="evaluation")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(fig, path, title)


def save_figure(fig: Any, path: Path, title: str) -> Path:
    """Title ``fig``, lay it out and write it to ``path`` as a PNG (100 dpi) through a temporary file and a
    rename (a reader never sees half a file); the figure is closed. Returns ``path``."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def print_results(title: str, before: dict[str, float], after: dict[str, float], extra: dict[str, Any]) -> None:
    """Print metrics before and after training side by side, then any extra rows (:func:`hfx.tables.print_table`)."""
    from hfx.tables import print_table

    rows = [{"metric": k, "before": before.get(k), "after": after.get(k)} for k in dict.fromkeys([*before, *after])]
    rows += [{"metric": k, "before": None, "after": v} for k, v in extra.items()]
    print_table(title, rows, float_format=".4f", justify={"before": "right", "after": "right"})
