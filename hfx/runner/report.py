"""End-of-run outputs: the curves plot and the before/after table with 95% intervals (printed by :mod:`hfx.tables`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hfx.metrics import supported_change

__all__ = ["plot_curves", "print_results", "result_rows", "save_figure"]


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


_INTERVAL_KEYS = ("_n", "_ci95_lo", "_ci95_hi")


def _interval(metrics: dict[str, Any], name: str) -> str:
    lo, hi = metrics.get(f"{name}_ci95_lo"), metrics.get(f"{name}_ci95_hi")
    return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def result_rows(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: before, after, their 95% intervals, n, and whether the intervals support a change.

    ``before`` and ``after`` are summary.json's (:func:`hfx.metrics.interval_columns`): ``<name>_n`` and
    ``<name>_ci95_lo/hi`` fill the interval columns of ``<name>`` instead of rows of their own. The change
    column says "supported" when the two intervals are disjoint and "not supported" when they overlap
    (:func:`hfx.metrics.supported_change`); empty without intervals on both sides.
    """
    names = [k for k in dict.fromkeys([*before, *after])
             if not any(k.endswith(s) and k[: -len(s)] in {**before, **after} for s in _INTERVAL_KEYS)]
    rows = []
    for k in names:
        verdict = supported_change(before, after, k)
        n = after.get(f"{k}_n", before.get(f"{k}_n"))
        rows.append({"metric": k, "before": before.get(k), "after": after.get(k), "before 95% CI": _interval(before, k),
                     "after 95% CI": _interval(after, k), "n": "" if n is None else str(n),
                     "change": "" if verdict is None else "supported" if verdict else "not supported"})
    return rows


def print_results(title: str, before: dict[str, Any], after: dict[str, Any], extra: dict[str, Any]) -> None:
    """Print metrics before and after training side by side, with their 95% intervals where the recipe gave
    them (:func:`result_rows`), then any extra rows (:func:`hfx.tables.print_table`)."""
    from hfx.tables import print_table

    rows = result_rows(before, after)
    intervals = any(r["n"] for r in rows)
    rows += [{"metric": k, "before": None, "after": v, "before 95% CI": "", "after 95% CI": "", "n": "", "change": ""}
             for k, v in extra.items()]
    columns = ["metric", "before", "after", *(["before 95% CI", "after 95% CI", "n", "change"] if intervals else [])]
    print_table(title, rows, columns=columns, float_format=".4f", justify={"before": "right", "after": "right"},
                min_width=110 if intervals else None)  # the interval columns unfolded even in a pipe
