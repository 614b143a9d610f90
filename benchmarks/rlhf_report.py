"""The table, JSON and plot of ``benchmarks/rlhf_table.py`` from its finished runs (``rlhf_runs.jsonl``)."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

from hfx.io import atomic_write_json, atomic_write_text

METHODS = ("ppo", "grpo", "rloo", "dpo", "bon4", "bon16")
LABELS = {"ppo": "PPO", "grpo": "GRPO", "rloo": "RLOO", "dpo": "DPO", "bon4": "best-of-4", "bon16": "best-of-16"}
USES_RM = {"ppo", "grpo", "rloo", "bon4", "bon16"}


def gold_cell(m: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(gold, 95% low, 95% high) of one evaluation (ppo's fields, or dpo's half-width ``gold_ci95``)."""
    if not m or "gold" not in m:
        return None
    if "gold_ci95_lo" in m:
        return m["gold"], m["gold_ci95_lo"], m["gold_ci95_hi"]
    half = m.get("gold_ci95", math.nan)
    return m["gold"], m["gold"] - half, m["gold"] + half


def _fmt_gold(m: dict[str, Any] | None) -> str:
    c = gold_cell(m)
    return "—" if c is None else f"{c[0]:+.3f} [{c[1]:+.3f}, {c[2]:+.3f}]"


def _num(m: dict[str, Any] | None, key: str, fmt: str) -> str:
    return format(m[key], fmt) if m and m.get(key) is not None else "—"


def _spread(values: list[float], fmt: str = "+.3f") -> str:
    if not values:
        return "—"
    mid = statistics.fmean(values)
    return f"{mid:{fmt}} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mid:{fmt}}"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: the seeds done, and mean ± sample standard deviation of gold after, Δ gold, proxy, KL, time."""
    reward = next((r for r in runs if r["method"] == "reward"), None)
    rm_min = reward["wall_seconds"] / 60 if reward else None
    out: dict[str, Any] = {"reward_model_minutes": rm_min, "methods": {}}
    for method in METHODS:
        rows = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        if not rows:
            continue
        out["methods"][method] = {
            "seeds": [r["seed"] for r in rows],
            "gold_after": [r["after"]["gold"] for r in rows],
            "gold_delta": [r["after"]["gold"] - r["before"]["gold"] for r in rows],
            "proxy_after": [r["after"].get("proxy_reward") for r in rows],
            "kl_after": [r["after"]["kl"] for r in rows],
            "wall_minutes": [r["wall_seconds"] / 60 for r in rows if r.get("wall_seconds") is not None],
            "peak_rss_mib": [r["peak_rss_mib"] for r in rows if r.get("peak_rss_mib") is not None],
            "imported": [r["seed"] for r in rows if r.get("imported")],
        }
    return out


def render(runs: list[dict[str, Any]], summary: dict[str, Any], seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """The markdown of ``rlhf_table.md``."""
    rm_min = summary["reward_model_minutes"]
    lines = ["# RLHF on the bundled rankings: PPO, GRPO, RLOO, DPO and best-of-n (smollm2-135m)", "",
             "`nice -n 5 python benchmarks/rlhf_table.py` (each run its own process, 1 thread, one at a time, on a "
             f"{os.cpu_count()}-core machine shared with other work: the load at each run's start is listed). Held-out "
             "gold = VADER compound of sampled answers to the first 32 held-out prompts (24 tokens, temperature "
             "0.8, fixed seed), mean with Student's t 95% interval over prompts; proxy = seed 0's default reward "
             "model (the one every reward-model method trains on or selects with); KL to the reference summed over "
             "the answer (best-of-n: log n − (n − 1)/n). Wall = the run's process, start to exit.", ""]
    fresh = (f"Fresh cache: + {rm_min:.1f} min for the reward model (`hfx run plugin=reward seed=0`, timed once "
             "alone in this table's queue) for every method that uses it; DPO needs none." if rm_min is not None
             else "Fresh cache: the reward model's training has not been timed in this table yet.")
    lines += [fresh, "",
              "| method | seed | gold before [95%] | gold after [95%] | Δ gold | proxy before → after | KL after | "
              "wall min | wall min, fresh cache | peak RSS MiB | load at start |",
              "|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|"]
    by_key = {(r["method"], r["seed"]): r for r in runs}
    missing = []
    for method in METHODS:
        for seed in seeds:
            r = by_key.get((method, seed))
            if r is None:
                missing.append(f"{LABELS[method]} seed {seed}")
                continue
            b, a = r["before"], r["after"]
            wall = r["wall_seconds"] / 60 if r.get("wall_seconds") is not None else None
            fresh_min = None if wall is None else wall + rm_min if method in USES_RM and rm_min is not None else (
                wall if method not in USES_RM else None)
            wall_txt = f"{wall:.1f}" if wall is not None else f"(run {r['seconds_in_run'] / 60:.1f})*"
            rss = f"{r['peak_rss_mib']:,.0f}" if r.get("peak_rss_mib") is not None else "—"
            lines.append(
                f"| {LABELS[method]} | {seed} | {_fmt_gold(b)} | {_fmt_gold(a)} | {a['gold'] - b['gold']:+.3f} | "
                f"{_num(b, 'proxy_reward', '+.3f')} → {_num(a, 'proxy_reward', '+.3f')} | {a['kl']:.2f} | "
                f"{wall_txt} | {'—' if fresh_min is None else f'{fresh_min:.1f}'} | {rss} | "
                f"{'—' if r['load_at_start'] is None else format(r['load_at_start'], '.1f')} |")
    lines += ["", "Over the seeds done (mean ± sample standard deviation over seeds):", "",
              "| method | seeds | gold after | Δ gold | proxy after | KL after | wall min | peak RSS MiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for method, s in summary["methods"].items():
        proxy = [p for p in s["proxy_after"] if p is not None]
        lines.append(f"| {LABELS[method]} | {', '.join(map(str, s['seeds']))} | {_spread(s['gold_after'])} | "
                     f"{_spread(s['gold_delta'])} | {_spread(proxy)} | {_spread(s['kl_after'], '.2f')} | "
                     f"{_spread(s['wall_minutes'], '.1f')} | "
                     f"{format(max(s['peak_rss_mib']), ',.0f') if s['peak_rss_mib'] else '—'} |")
    if any(r.get("imported") for r in runs):
        lines += ["", "\\* imported: an earlier run of the same command and seed, made outside this script before "
                  "this table (same preset, same seed-0 reward model, same sampling distribution); its summary's "
                  "run seconds are shown, not a wall time, and its peak memory was not recorded by this script."]
    lines += ["", "Missing cells (not run in the time available): " + (", ".join(missing) if missing else "none") + ".",
              "", "Plot: `rlhf_gold_vs_sqrt_kl.png` (held-out gold after against √KL, each run a point with its "
              "interval; the base policy at √KL = 0)."]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Held-out gold after against sqrt(KL to the reference) for every run (Gao et al. 2022's axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    markers = dict(zip(METHODS, "osD^vP", strict=True))
    for method in METHODS:
        rows = [r for r in runs if r["method"] == method]
        if not rows:
            continue
        x = [math.sqrt(max(r["after"]["kl"], 0.0)) for r in rows]
        cells = [gold_cell(r["after"]) for r in rows]
        y = [c[0] for c in cells]
        err = [[c[0] - c[1] for c in cells], [c[2] - c[0] for c in cells]]
        ax.errorbar(x, y, yerr=err, fmt=markers[method], capsize=3, label=LABELS[method], alpha=0.85)
    base = [gold_cell(r["before"]) for r in runs if r["method"] in ("ppo", "grpo", "rloo", "dpo")]
    if base:
        ax.scatter([0.0] * len(base), [c[0] for c in base], color="grey", marker="x", label="base policy")
    ax.set_xlabel("√KL to the reference (√nats, summed over the answer)")
    ax.set_ylabel("held-out gold (VADER compound)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Gold against √KL, smollm2-135m on the bundled rankings", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs: list[dict[str, Any]], results: Path) -> None:
    """Write ``rlhf_table.{md,json}`` and ``rlhf_gold_vs_sqrt_kl.png`` under ``results``."""
    summary = summarise(runs)
    atomic_write_json(results / "rlhf_table.json", {"summary": summary, "runs": runs})
    text = render(runs, summary)
    notes = results / "rlhf_table_notes.md"  # hand-written notes, kept across rebuilds
    atomic_write_text(results / "rlhf_table.md", text + ("\n" + notes.read_text() if notes.is_file() else ""))
    plot([r for r in runs if r["method"] in METHODS], results / "rlhf_gold_vs_sqrt_kl.png")
    print(text)
