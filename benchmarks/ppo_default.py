"""The default ``hfx run plugin=ppo`` over several seeds, and one longer run to see over-optimisation.

    python benchmarks/ppo_default.py                         # seeds 0 1 2 with the default preset
    python benchmarks/ppo_default.py --seeds 0 --long 120    # also one run of 120 updates (seed 0)
    python benchmarks/ppo_default.py --long 72 --long-overrides ppo.kl_coef=0   # the long run without KL penalty
    python benchmarks/ppo_default.py --reuse DIR ...         # count finished run folders as their seeds' runs

Each run is its own ``hfx run plugin=ppo seed=S`` subprocess (the reward model is trained the first time
and cached under ``$HFX_CACHE/ppo/``; its training time is reported apart). Reported per seed: the held-out
gold score (VADER's compound sentiment, mean over 32 prompts x 2 samples) before and after, the proxy
reward, the summed KL to the reference, and the wall time; then the mean and spread over seeds. The long
run's per-update proxy reward and gold score (on the training rollouts) are averaged over windows of
``--window`` updates: where the proxy keeps rising while the gold score stalls or falls is over-optimisation
of the reward model (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization"); the parting point
reported is the window of highest gold, and ``ppo_overoptimisation.png`` plots both against √KL, as Gao et al.

Writes benchmarks/results/ppo_default.{json,md}. No reference library has this run: trl's PPO examples need
a GPU and a reward model from the Hub.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hfx.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def run_ppo(run_dir: Path, seed: int, overrides: list[str]) -> float:
    """One ``hfx run plugin=ppo`` into ``run_dir``; returns its wall seconds (process start to exit)."""
    cmd = [sys.executable, "-m", "hfx", "run", "plugin=ppo", f"seed={seed}", f"run_dir={run_dir}", *overrides]
    print("$", " ".join(cmd[1:]), flush=True)
    started = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    return time.perf_counter() - started


def read_run(run_dir: Path) -> dict[str, Any]:
    """before/after held-out metrics and the per-update rows of one finished run folder."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    updates = [r for r in rows if "proxy_reward" in r and "eval_gold" not in r]
    if not (run_dir / "summary.json").is_file():  # a run stopped before its end: its updates so far
        before = json.loads((run_dir / "before.json").read_text())
        return {"run_dir": str(run_dir), "before": before, "after": None, "seconds_in_run": None, "updates": updates}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run_dir": str(run_dir), "before": summary["before"], "after": summary["after"],
            "seconds_in_run": summary["seconds"], "updates": updates}


def _run_entry(run_dir: Path, seed: int, wall: float | None) -> dict[str, Any]:
    """One seed's row: its run folder's metrics, its wall seconds (default: the run's own), whether it trained
    its reward model (its ``<run_dir>.log`` says so)."""
    got = read_run(run_dir)
    log = run_dir.with_suffix(".log")
    trained = log.is_file() and "training one first" in log.read_text()
    given = (yaml.safe_load((run_dir / "config.yaml").read_text()).get("ppo") or {}).get("reward_model") or ""
    return {"seed": seed, "wall_seconds": wall if wall is not None else got["seconds_in_run"],
            "trained_reward": trained, "reward_model_path": given, **got}


def reward_model_metrics(seed: int, model: str = "smollm2-135m") -> dict[str, float] | None:
    """Held-out accuracy and Spearman of the cached reward model of ``seed`` (its training run's summary)."""
    from hfx_plugins.ppo.rewards import cached_reward_dir

    cached = cached_reward_dir(model, seed)
    runs = sorted(cached.parent.glob(f".{cached.name}.runs/*/summary.json"))
    return json.loads(runs[-1].read_text())["after"] if runs else None


def parting(wins: list[dict[str, float]]) -> dict[str, Any]:
    """Where gold and proxy part: the window of highest gold, and proxy and gold in the windows after it."""
    peak = max(range(len(wins)), key=lambda i: wins[i]["gold"])
    after = wins[peak + 1:]
    return {"peak": wins[peak], "later": after,
            "proxy_rises_after": bool(after) and max(w["proxy_reward"] for w in after) > wins[peak]["proxy_reward"],
            "gold_falls_after": bool(after) and after[-1]["gold"] < wins[peak]["gold"]}


def plot_long(updates: list[dict[str, float]], wins: list[dict[str, float]], path: Path) -> None:
    """Proxy reward and gold score of the long run against √KL (per update, and window means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    twin = ax.twinx()
    x = [max(u["kl"], 0.0) ** 0.5 for u in updates]
    xw = [max(w["kl"], 0.0) ** 0.5 for w in wins]
    ax.scatter(x, [u["proxy_reward"] for u in updates], s=8, alpha=0.35, color="tab:blue")
    ax.plot(xw, [w["proxy_reward"] for w in wins], "o-", color="tab:blue", label="proxy reward (reward model)")
    twin.scatter(x, [u["gold"] for u in updates], s=8, alpha=0.35, color="tab:orange")
    twin.plot(xw, [w["gold"] for w in wins], "s-", color="tab:orange", label="gold (VADER compound)")
    ax.set_xlabel("√KL to the reference (√nats, summed over the response)")
    ax.set_ylabel("proxy reward")
    twin.set_ylabel("gold")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("PPO run longer: training rollouts (dots) and window means", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def windows(updates: list[dict[str, float]], width: int = 10) -> list[dict[str, float]]:
    """Means of proxy reward, gold and KL over consecutive windows of ``width`` updates."""
    out = []
    for start in range(0, len(updates), width):
        chunk = updates[start:start + width]
        out.append({"updates": f"{chunk[0]['step']}-{chunk[-1]['step']}",
                    **{k: statistics.fmean(r[k] for r in chunk) for k in ("proxy_reward", "gold", "kl")}})
    return out


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:+.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:+.3f}"


def _source(run: dict[str, Any]) -> str:
    if run.get("reward_model_path"):
        return f"given: {Path(run['reward_model_path']).name}"
    return "trained in this run" if run.get("trained_reward") else "cached"


def render(report: dict[str, Any]) -> str:
    """The markdown of ``benchmarks/results/ppo_default.md``: per-seed table, mean and spread, the long run."""
    lines = ["# PPO: the default `hfx run plugin=ppo` (smollm2-135m + LoRA, reward model from the bundled rankings)", "",
             f"Command: `{report['command']}`. Machine load (1-min average) at start / end: "
             f"{report['load'][0]:.1f} / {report['load'][1]:.1f} on {os.cpu_count()} cores.", "",
             "Held-out gold score (VADER compound, 32 prompts x 2 samples, sampled at the preset's temperature with a "
             "fixed seed), proxy reward (the reward model) and KL to the reference (summed over the response):", "",
             "| seed | gold before | gold after | Δ gold | positive share before → after | proxy before → after | KL after | run s | wall s | reward model |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---|"]
    reward_rows: list[str] = []
    for r in report["runs"]:
        b, a = r["before"], r["after"]
        rm = r.get("reward_model") or {}
        if rm:
            reward_rows.append(f"| {r['seed']} | {rm['accuracy']:.4f} | {rm['spearman']:.4f} |")
        lines.append(f"| {r['seed']} | {b['gold']:+.3f} | {a['gold']:+.3f} | {a['gold'] - b['gold']:+.3f} | "
                     f"{b['positive_share']:.2f} → {a['positive_share']:.2f} | {b['proxy_reward']:+.3f} → "
                     f"{a['proxy_reward']:+.3f} | {a['kl']:.2f} | {r['seconds_in_run']:.0f} | {r['wall_seconds']:.0f} | "
                     f"{_source(r)} |")
    runs = report["runs"]
    if runs:
        deltas = [r["after"]["gold"] - r["before"]["gold"] for r in runs]
        lines += ["", f"Over {len(runs)} seed(s) (mean ± sample standard deviation): gold before "
                  f"{_spread([r['before']['gold'] for r in runs])}, after {_spread([r['after']['gold'] for r in runs])}, "
                  f"Δ {_spread(deltas)}; KL after {_spread([r['after']['kl'] for r in runs])}.",
                  "", "run s: evaluation before, the PPO updates, evaluation after and saving (summary.json's seconds); "
                  "wall s: the whole process, with model loading and, where the seed's reward model was not cached yet, "
                  "its training (the reward model is cached per model and seed)."]
    timed = [u["seconds"] for r in runs for u in r["updates"] if "seconds" in u]
    if timed:
        lines += ["", f"Seconds per PPO update (rollout, scoring and optimisation; {len(timed)} updates): median "
                  f"{statistics.median(timed):.1f}, range {min(timed):.1f}-{max(timed):.1f}."]
    if reward_rows:
        lines += ["", "The reward model of each run (the reward plugin's default run; held-out pairs and Spearman "
                  "with the gold score):", "", "| run seed | pair accuracy | Spearman |", "|---|---:|---:|", *reward_rows]
    if report.get("long"):
        lg = report["long"]
        ppo_cfg = yaml.safe_load(lg["config"]).get("ppo", {})
        changed = [f"ppo.{k}: {ppo_cfg[k]}" for k in ("updates", "learning_rate", "kl_coef") if k in ppo_cfg]
        lines += ["", f"## A longer run: {lg['updates_total']} updates (seed {lg['seed']})", "",
                  f"Its settings (the rest as the preset): {', '.join(changed)}. "
                  f"Training rollouts ({ppo_cfg.get('batch_size', 16)} an update), means over windows of "
                  f"{lg['window']} updates:", "",
                  "| updates | proxy reward | gold | KL |", "|---|---:|---:|---:|"]
        lines += [f"| {w['updates']} | {w['proxy_reward']:+.3f} | {w['gold']:+.3f} | {w['kl']:.2f} |" for w in lg["windows"]]
        pt = parting(lg["windows"])
        peak = pt["peak"]
        if pt["later"]:
            last = pt["later"][-1]
            verdict = ("the proxy reward keeps rising while the gold score falls: they part at the peak"
                       if pt["proxy_rises_after"] and pt["gold_falls_after"] else
                       "the gold score falls after its peak" if pt["gold_falls_after"] else
                       "the gold score does not fall after its best window")
            lines += ["", f"Gold is highest in updates {peak['updates']} ({peak['gold']:+.3f}, proxy "
                      f"{peak['proxy_reward']:+.3f}, KL {peak['kl']:.1f}, √KL {peak['kl'] ** 0.5:.1f}); by updates "
                      f"{last['updates']} the proxy is {last['proxy_reward']:+.3f} and gold {last['gold']:+.3f} (KL "
                      f"{last['kl']:.1f}): {verdict}. Plot against √KL: `ppo_overoptimisation.png`."]
        else:
            lines += ["", f"Gold is still highest in the last window ({peak['updates']}): no parting within this run."]
        if lg["after"] is not None:
            lines += ["", f"Held-out after {lg['updates_total']} updates: gold {lg['after']['gold']:+.3f} (before "
                      f"{lg['before']['gold']:+.3f}), proxy {lg['after']['proxy_reward']:+.3f}, KL {lg['after']['kl']:.2f}."]
        else:
            lines += ["", "The run was stopped after these updates (no held-out evaluation after it)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run (or reuse) the seeds' runs and the long run; write ``ppo_default.{json,md}`` under benchmarks/results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--long", type=int, default=0, help="updates of one extra, longer run (0: none)")
    parser.add_argument("--work", type=Path, default=Path("runs/ppo_default"), help="folder for the run folders")
    parser.add_argument("--reuse", type=Path, nargs="*", default=[], help="finished run folders to summarise instead")
    parser.add_argument("--wall", nargs="*", default=[], metavar="SEED=SECONDS",
                        help="with --reuse: each run's wall seconds, timed outside (default: its run seconds)")
    parser.add_argument("--long-reuse", type=Path, default=None, help="a finished longer run folder to report")
    parser.add_argument("--reward-run", type=Path, default=None,
                        help="the reward run folder (summary.json) of a reward model given to the runs by ppo.reward_model")
    parser.add_argument("--long-overrides", nargs="*", default=[], help="hfx overrides for the longer run only")
    parser.add_argument("--window", type=int, default=8, help="updates per window in the longer run's table")
    parser.add_argument("overrides", nargs="*", help="extra hfx overrides for every run (e.g. ppo.updates=20)")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, Any] = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                              "runs": []}
    walls = {int(k): float(v) for k, v in (w.split("=") for w in args.wall)}
    for path in args.reuse:
        seed = int(yaml.safe_load((path / "config.yaml").read_text())["seed"])
        report["runs"].append(_run_entry(path, seed, walls.get(seed)))
    for seed in [s for s in args.seeds if s not in {r["seed"] for r in report["runs"]}]:
        run_dir = args.work / f"seed{seed}"
        report["runs"].append(_run_entry(run_dir, seed, run_ppo(run_dir, seed, args.overrides)))
    if args.long or args.long_reuse:
        run_dir = args.long_reuse or args.work / f"long{args.long}"
        seed = args.seeds[0] if args.seeds else 0
        wall = None if args.long_reuse else run_ppo(run_dir, seed, [*args.overrides, *args.long_overrides,
                                                                   f"ppo.updates={args.long}"])
        got = read_run(run_dir)
        config = (run_dir / "config.yaml").read_text()
        report["long"] = {"seed": seed, "updates_total": len(got["updates"]), "wall_seconds": wall, "config": config,
                          "before": got["before"], "after": got["after"],
                          "window": args.window, "windows": windows(got["updates"], args.window),
                          "updates": got["updates"]}
        plot_long(got["updates"], report["long"]["windows"], RESULTS / "ppo_overoptimisation.png")
    for r in report["runs"]:
        given = args.reward_run and r["reward_model_path"]
        r["reward_model"] = (json.loads((args.reward_run / "summary.json").read_text())["after"] if given
                             else reward_model_metrics(r["seed"]))
    report["load"] = [load_start, os.getloadavg()[0]]
    atomic_write_json(RESULTS / "ppo_default.json", report)
    atomic_write_text(RESULTS / "ppo_default.md", render(report))
    print(render(report))


if __name__ == "__main__":
    main()
