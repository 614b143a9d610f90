"""PPO, GRPO, RLOO, DPO and best-of-n on the bundled rankings and smollm2-135m, in one table on the gold judge.

    nice -n 5 python benchmarks/rlhf_table.py                       # every method, seeds 0 1 2 (resumable)
    python benchmarks/rlhf_table.py --seeds 0 --methods ppo dpo     # a subset
    python benchmarks/rlhf_table.py --report                        # only rebuild the table from finished runs

Each run is its own process with one thread (``OMP_NUM_THREADS=1``): ``hfx run plugin=X seed=S`` for the
trainers (ppo; grpo; rloo = grpo with ``grpo.estimator=rloo``; dpo), and ``--best-of-n N`` of this script for
best-of-n (no training: N answers per held-out prompt from the base policy, the reward model keeps the
highest-scored one; ``hfx_plugins.ppo.best_of_n``). Every trainer runs its own preset; every method that reads
a reward model reads the same one, seed 0's cached default (``--reward-model``), so the seeds vary the
method's own randomness, not the reward model. Held-out prompts, answer length, temperature and the gold judge
(VADER's compound sentiment) are those of the trainers' ``evaluate`` (the first 32 held-out prompts, 24 new
tokens at temperature 0.8). Best-of-n's "before" is the mean gold of all its N samples (the base policy), its
KL the closed form ``log N - (N - 1) / N`` (Stiennon et al. 2020; an upper bound, Beirami et al. 2024).

One JSON line per finished run goes to ``benchmarks/results/rlhf_runs.jsonl`` (a rerun skips the runs there),
with the run's wall seconds (process start to exit) and peak resident memory (``ru_maxrss`` of the process,
from ``os.wait4``). "Fresh cache" wall minutes add the reward model's training, timed once by ``--methods
reward`` (``hfx run plugin=reward seed=0``, what ppo trains on first use), to the methods that use it. Writes
``benchmarks/results/rlhf_table.{md,json}`` and ``rlhf_gold_vs_sqrt_kl.png`` (gold against sqrt(KL), Gao et
al. 2022, https://arxiv.org/abs/2210.10760).
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

from hfx.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
RUNS_JSONL = RESULTS / "rlhf_runs.jsonl"
METHODS = ("ppo", "grpo", "rloo", "bon4", "bon16", "dpo")  # the order of the queue


def default_reward_model() -> Path:
    """Seed 0's cached default reward model (what ``hfx run plugin=ppo seed=0`` trains on first use)."""
    from hfx_plugins.ppo.rewards import cached_reward_dir

    return cached_reward_dir("smollm2-135m", 0)


def command(method: str, seed: int, run_dir: Path, rm: Path) -> list[str]:
    """The process one run is: its ``hfx run`` (or this script's best-of-n worker) command line."""
    hfx = [sys.executable, "-m", "hfx", "run", f"seed={seed}", f"run_dir={run_dir}"]
    if method == "ppo":
        return [*hfx, "plugin=ppo", f"ppo.reward_model={rm}"]
    if method in ("grpo", "rloo"):
        return [*hfx, "plugin=grpo", f"grpo.estimator={method}", f"grpo.reward_model={rm}"]
    if method == "dpo":  # trained on the rankings; the reward model only scores its held-out answers (proxy)
        return [*hfx, "plugin=dpo", f"dpo.proxy_reward_model={rm}"]
    if method == "reward":
        return [*hfx, "plugin=reward"]
    n = int(method.removeprefix("bon"))
    return [sys.executable, str(Path(__file__).resolve()), "--best-of-n", str(n), "--seeds", str(seed),
            "--run-dir", str(run_dir), "--reward-model", str(rm)]


def git_state() -> str:
    """The commit the run's code came from, with ``+dirty`` when the working tree had changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "plugins", "hfx"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    return head.strip() + ("+dirty" if dirty.strip() else "")


def run_one(method: str, seed: int, work: Path, rm: Path) -> dict[str, Any] | None:
    """Run one method and seed in its own single-threaded process; its JSON line (metrics, wall, peak RSS)."""
    run_dir = work / f"{method}-seed{seed}"
    cmd = command(method, seed, run_dir, rm)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"[{time.strftime('%H:%M:%S')}] $", " ".join(cmd[1:]), flush=True)
    code = git_state()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(work / f"{method}-seed{seed}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"{method} seed {seed} failed (exit {os.waitstatus_to_exitcode(status)}); see its log in {work}")
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"method": method, "seed": seed, "run_dir": str(run_dir), "command": " ".join(cmd[1:]), "code": code,
            "wall_seconds": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "load_at_start": round(load, 2), "load_at_end": round(os.getloadavg()[0], 2),
            "before": summary.get("before"), "after": summary.get("after"), "seconds_in_run": summary.get("seconds")}


def imported(method: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """The JSON line of a finished run folder of the same command made outside this script: its metrics, its
    run seconds (summary.json's), no wall time or peak RSS (``wall_seconds``, ``peak_rss_mib`` None)."""
    import yaml

    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if int(config["seed"]) != seed:
        raise SystemExit(f"{run_dir} ran seed {config['seed']}, not {seed}")
    return {"method": method, "seed": seed, "run_dir": str(run_dir), "command": f"(imported: {run_dir})",
            "code": "earlier", "imported": True, "wall_seconds": None, "peak_rss_mib": None, "load_at_start": None,
            "load_at_end": None, "before": summary.get("before"), "after": summary.get("after"),
            "seconds_in_run": summary.get("seconds")}


def adopt(pid: int, method: str, seed: int, work: Path) -> dict[str, Any] | None:
    """The JSON line of a run already going as process ``pid`` (started by an earlier invocation of this script,
    then left running when that invocation was stopped to change the queue's order): waits for it to exit.

    Wall seconds run from the process's start time (``/proc/<pid>/stat``, field 22); the peak RSS is its
    ``VmHWM`` (the same high-water mark as ``ru_maxrss``), read every 2 s until it exits.
    """
    run_dir = work / f"{method}-seed{seed}"
    ticks = os.sysconf("SC_CLK_TCK")
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    started = boot + int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    peak_kib = 0
    while Path(f"/proc/{pid}").exists():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError):  # exiting
            pass
        time.sleep(2)
    wall = time.time() - started
    if not (run_dir / "summary.json").is_file():
        print(f"{method} seed {seed} (pid {pid}) ended without a summary.json")
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"method": method, "seed": seed, "run_dir": str(run_dir), "command": f"(adopted pid {pid})",
            "code": git_state(), "wall_seconds": round(wall, 1), "peak_rss_mib": round(peak_kib / 1024, 1),
            "load_at_start": None, "load_at_end": round(os.getloadavg()[0], 2), "before": summary.get("before"),
            "after": summary.get("after"), "seconds_in_run": summary.get("seconds")}


def best_of_n_worker(n: int, seed: int, run_dir: Path, rm: Path, eval_prompts: int = 0) -> None:
    """One best-of-n run: the base smollm2-135m answers the held-out prompts n times; writes ``summary.json``."""
    import torch

    from hfx.metrics import mean
    from hfx.models.loading import load_model
    from hfx_plugins.ppo import (
        PPORunConfig,
        best_of_n,
        best_of_n_kl,
        response_texts,
        reward_model_for,
        vader_scores,
    )
    from hfx_plugins.ppo.rewards import load_prompts

    torch.set_num_threads(1)
    started = time.perf_counter()
    cfg = PPORunConfig(**_preset("ppo"))  # the held-out prompts, length and temperature of ppo's evaluate
    if eval_prompts:
        cfg.eval_prompts = eval_prompts
    policy, tok = load_model("smollm2-135m", "causal-lm")
    policy.requires_grad_(False).eval()
    _, prompts = load_prompts(tok, cfg, print)
    reward = reward_model_for(str(rm), tok, argparse.Namespace(print=print))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    all_gold, all_proxy, best_gold, best_proxy, rows = [], [], [], [], []
    for got in best_of_n(policy, reward, prompts, n, cfg.response_length, cfg.temperature, tok.eos_token_id, pad,
                         seed=seed + 1_000_003):
        ro = got.rollout
        texts = response_texts(tok, ro.query_responses, ro.attention_mask, ro.context_length)
        gold = torch.tensor(vader_scores(texts)).view_as(got.scores)  # (b, n)
        all_gold += gold.mean(1).tolist()  # per prompt: the base policy's mean over its n samples
        all_proxy += got.scores.mean(1).tolist()
        best_gold += gold.gather(1, got.chosen[:, None]).squeeze(1).tolist()  # (b,)
        best_proxy += got.scores.max(1).values.tolist()
        rows += [{"answers": texts[i * n:(i + 1) * n], "chosen": int(c)} for i, c in enumerate(got.chosen)]
    summary = {"plugins": ["best_of_n"], "model": "smollm2-135m", "n": n,
               "before": _evaluation(mean(all_gold), all_proxy, 0.0),
               "after": _evaluation(mean(best_gold), best_proxy, best_of_n_kl(n)),
               "seconds": round(time.perf_counter() - started, 1)}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "answers.json", rows)
    atomic_write_json(run_dir / "summary.json", summary)
    print(json.dumps(summary, indent=1))


def _evaluation(gold: Any, proxy: list[float], kl: float) -> dict[str, float]:
    return {"gold": float(gold), "gold_n": gold.n, "gold_ci95_lo": gold.ci95[0], "gold_ci95_hi": gold.ci95[1],
            "proxy_reward": statistics.fmean(proxy), "kl": kl}


def _preset(plugin: str) -> dict[str, Any]:
    """The ``<plugin>:`` section of a plugin's default preset (plugins/<plugin>/configs/default.yaml)."""
    import yaml

    return yaml.safe_load((ROOT / "plugins" / plugin / "configs" / "default.yaml").read_text())[plugin]


def main() -> None:
    """Run the missing (method, seed) runs one at a time, then write the table, its JSON and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), help=f"of {', '.join(METHODS)}, reward")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "rlhf_table", help="folder of the run folders")
    parser.add_argument("--reward-model", type=Path, default=None, help="default: seed 0's cached reward model")
    parser.add_argument("--report", action="store_true", help="only rebuild the table from rlhf_runs.jsonl")
    parser.add_argument("--import-run", nargs="*", default=[], metavar="METHOD:SEED:DIR",
                        help="record finished run folders of the same command made outside this script (no wall "
                             "time or peak RSS: the table marks them)")
    parser.add_argument("--adopt", default="", metavar="PID:METHOD:SEED",
                        help="first wait for a run left going by an earlier invocation and record it")
    parser.add_argument("--best-of-n", type=int, default=0, help=argparse.SUPPRESS)  # the worker of one run
    parser.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--eval-prompts", type=int, default=0, help=argparse.SUPPRESS)  # a quick check only
    args = parser.parse_args()
    rm = args.reward_model or default_reward_model()
    if args.best_of_n:
        best_of_n_worker(args.best_of_n, args.seeds[0], args.run_dir, rm, args.eval_prompts)
        return
    from rlhf_report import write_report  # beside this file

    for spec in args.import_run:
        method, seed, folder = spec.split(":", 2)
        with open(RUNS_JSONL, "a") as f:
            f.write(json.dumps(imported(method, int(seed), Path(folder))) + "\n")
    if args.adopt:
        pid, method, seed = args.adopt.split(":")
        line = adopt(int(pid), method, int(seed), args.work)
        if line is not None:
            with open(RUNS_JSONL, "a") as f:
                f.write(json.dumps(line) + "\n")
    if not args.report:
        args.work.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:  # seed by seed: every method's seed 0 first
            for method in args.methods:
                if (method, seed) in done_runs() or (method == "reward" and seed != args.seeds[0]):
                    continue
                line = run_one(method, seed, args.work, rm)
                if line is None:  # a failed run: the next one still runs; a rerun tries it again
                    continue
                with open(RUNS_JSONL, "a") as f:
                    f.write(json.dumps(line) + "\n")
                write_report(load_runs(), RESULTS)
    write_report(load_runs(), RESULTS)


def load_runs() -> list[dict[str, Any]]:
    """The finished runs of ``rlhf_runs.jsonl`` (the last line of a repeated method and seed wins)."""
    if not RUNS_JSONL.is_file():
        return []
    rows = {}
    for line in RUNS_JSONL.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(r["method"], r["seed"])] = r
    return list(rows.values())


def done_runs() -> set[tuple[str, int]]:
    return {(r["method"], r["seed"]) for r in load_runs()}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
