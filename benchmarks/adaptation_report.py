"""The adaptation table's report: benchmarks/results/adaptation_table.{md,json} and adaptation_curves.png.

Written from benchmarks/results/adaptation_runs.jsonl (one line per finished run of
``benchmarks/adaptation_table.py``) by ``python benchmarks/adaptation_table.py --report`` and after every run.
Per method: each seed's accuracy with its 95% Wilson interval, the mean over seeds and its spread (the
smallest and largest seed), trainable parameters, training seconds and inference milliseconds per example
(means over seeds), and the load average seen during the runs (the CPU is shared: times are rough).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ORDER = ["zero-shot", "4-shot random", "4-shot kNN", "prompt tuning", "prefix tuning", "LoRA", "full fine-tuning"]
NOTES = {
    "zero-shot": "template only",
    "4-shot random": "4 random training examples in the prompt (lm-eval's sampler, seed 1234)",
    "4-shot kNN": "the 4 nearest training examples (KATE, minilm embeddings)",
    "prompt tuning": "10 virtual tokens, TEXT init (the instruction)",
    "prefix tuning": "10-token prefix in all 30 layers, started from the instruction's keys/values",
    "LoRA": "r 8, alpha 16, q/k/v/o projections",
    "full fine-tuning": "every weight (embeddings tied to the output layer)",
}


def _latest(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, the runs of its latest step budget (the one chosen from the curves), one per seed."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    out = {}
    for method, rs in by.items():
        steps = rs[-1]["steps"]
        seeds: dict[Any, dict[str, Any]] = {}
        for r in rs:
            if r.get("lr") != rs[-1].get("lr") or (r["seed"] in seeds and seeds[r["seed"]]["steps"] == steps):
                continue
            if r["steps"] == steps:
                seeds[r["seed"]] = r
            elif steps is not None and r["steps"] > steps and r["seed"] not in seeds:
                cut = _cut(r, steps)
                if cut:
                    seeds[r["seed"]] = cut
        out[method] = [seeds[s] for s in sorted(seeds, key=lambda s: -1 if s is None else s)]
    return out


def _cut(run: dict[str, Any], steps: int) -> dict[str, Any] | None:
    """A longer run read at ``steps``: with a constant learning rate after warm-up and the seed's data order,
    its first ``steps`` steps are exactly a ``steps``-step run."""
    point = next((p for p in run["curve"] if p["step"] == steps), None)
    if point is None:
        return None
    return {**run, "steps": steps, "accuracy": point["accuracy"], "ci95": point["ci95"],
            "train_seconds": point["train_seconds"], "infer_ms_per_example": point["infer_ms_per_example"],
            "curve": [p for p in run["curve"] if p["step"] <= steps], "read_from_steps": run["steps"]}


def _cell(rs: list[dict[str, Any]]) -> str:
    if len(rs) == 1:
        r = rs[0]
        return f"{r['accuracy']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
    accs = [r["accuracy"] for r in rs]
    return f"{sum(accs) / len(accs):.3f} (seeds {min(accs):.2f}-{max(accs):.2f})"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (in ORDER): seeds, per-seed accuracy and interval, means, budget."""
    rows = []
    latest = _latest(runs)
    for method in ORDER + [m for m in latest if m not in ORDER]:
        rs = latest.get(method)
        if not rs:
            continue
        n = len(rs)
        rows.append({
            "method": method, "steps": rs[0]["steps"], "lr": rs[0].get("lr"), "seeds": [r["seed"] for r in rs],
            "accuracy_mean": round(sum(r["accuracy"] for r in rs) / n, 4),
            "accuracy_min": min(r["accuracy"] for r in rs), "accuracy_max": max(r["accuracy"] for r in rs),
            "per_seed": [{"seed": r["seed"], "accuracy": r["accuracy"], "ci95": r["ci95"]} for r in rs],
            "trainable_params": rs[0]["trainable_params"],
            "train_seconds_mean": round(sum(r["train_seconds"] for r in rs) / n, 1),
            "infer_ms_per_example_mean": round(sum(r["infer_ms_per_example"] for r in rs) / n, 1),
            "load_avg": [min(r["load_avg"][0] for r in rs), max(r["load_avg"][1] for r in rs)],
        })
    return rows


def _curve_lines(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| method | seed | steps: accuracy [95% Wilson] |", "|---|---|---|"]
    for r in runs:
        if r.get("curve"):
            pts = "; ".join(f"{p['step']}: {p['accuracy']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]"
                            for p in r["curve"])
            lines.append(f"| {r['method']} (lr {r['lr']:g}) | {r['seed']} | {pts} |")
    return lines


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Held-out accuracy against training steps, one line per trained run; the prompting rows as levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = dict(zip(ORDER[3:], ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=True))
    labelled: set[str] = set()
    for r in runs:
        if r.get("curve"):
            steps = [p["step"] for p in r["curve"]]
            acc = [p["accuracy"] for p in r["curve"]]
            ax.plot(steps, acc, marker=".", color=colours.get(r["method"], "gray"), alpha=0.8,
                    label=None if r["method"] in labelled else r["method"])
            labelled.add(r["method"])
    for r, style in zip([x for x in runs if not x.get("curve")], [":", "--", "-."], strict=False):
        ax.axhline(r["accuracy"], color="black", linestyle=style, linewidth=1, label=f"{r['method']} (no training)")
    ax.set_xlabel("training steps (batches of 8 sentences)")
    ax.set_ylabel("accuracy on the 100 held-out sentences")
    ax.set_ylim(0.3, 1.02)
    ax.set_title("smollm2-135m on sentiment_foobar: held-out accuracy while training (each seed a line)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs: list[dict[str, Any]], out: Path) -> None:
    """adaptation_table.{md,json} and adaptation_curves.png in ``out`` from the finished ``runs``."""
    from hfx.io import atomic_write_json, atomic_write_text

    if not runs:
        return
    rows = summarise(runs)
    atomic_write_json(out / "adaptation_table.json", {"model": "smollm2-135m", "task": "sentiment_foobar",
                                                      "test_rows": 100, "train_pool": 1200, "rows": rows,
                                                      "runs": runs, "load_avg_now": os.getloadavg()[0]})
    lines = ["# Adapting smollm2-135m to sentiment_foobar (label words foo/bar)", "",
             "`python benchmarks/adaptation_table.py` (resumable; every run is a line of `adaptation_runs.jsonl`). "
             "100 held-out sentences, scored by the label word's log-likelihood (lm-eval's `acc`); trained rows: "
             "batches of 8 of the 1,200 training sentences, AdamW, 3 warm-up steps then a constant learning "
             "rate, loss on the label token only. One torch thread, one run at a time, on a 2-core CPU shared "
             "with other jobs (load average column): the times are rough.", "",
             "| method | accuracy: mean over seeds (spread) or one run [95% Wilson] | each seed [95% Wilson] | "
             "steps | lr | trainable params | train s | inference ms/example | load avg | notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    latest = _latest(runs)
    for r in rows:
        seeds = "; ".join(f"{p['seed']}: {p['accuracy']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]"
                          for p in r["per_seed"]) if r["steps"] else ""
        lr = f"{r['lr']:g}" if r["lr"] else ""
        lines.append(f"| {r['method']} | {_cell(latest[r['method']])} | {seeds} | {r['steps'] or ''} | {lr} | "
                     f"{r['trainable_params']:,} | {r['train_seconds_mean']} | {r['infer_ms_per_example_mean']} | "
                     f"{r['load_avg'][0]:.1f}-{r['load_avg'][1]:.1f} | {NOTES.get(r['method'], '')} |")
    lines += ["", "## Curves (held-out accuracy along the way, each seed; `adaptation_curves.png`)", ""] + _curve_lines(runs)
    notes = out / "adaptation_notes.md"  # hand-written reading of the figures, kept across rewrites
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    atomic_write_text(out / "adaptation_table.md", "\n".join(lines) + "\n")
    plot(runs, out / "adaptation_curves.png")
