"""N processes (DDP over gloo, CPU) vs one process with N times the gradient accumulation: same training?

    python benchmarks/ddp_equivalence.py            # 2 processes; writes benchmarks/results/ddp_equivalence.json

Both runs fine-tune a tiny random BERT without dropout (hfx.testing, built here, nothing downloaded) on
200 sentences of the bundled sentiment set, one torch thread per process:

- ``accelerate launch --cpu --num_processes N ... -m hfx run ... train.batch_size=B
  train.gradient_accumulation_steps=1``, the README's command (accelerate's ``--cpu`` launcher alone would
  start a single process, its multi-CPU mode going through mpirun; hfx.runner.launch then starts the N
  processes with torch.distributed.run, over gloo);
- ``python -m hfx run ... train.batch_size=B train.gradient_accumulation_steps=N``.

Step ``s`` of the N-process run uses batches ``Ns .. Ns+N-1`` of the seeded epoch permutation, one per process;
step ``s`` of the single process accumulates the same N batches. Keep ``200 / B`` a multiple of N (with a
remainder, accelerate drops the last batches of an epoch in N processes while one process carries them over).
The script compares every logged training loss, the evaluations and the final metrics, writes them all to
the JSON file and exits with status 1 if any relative difference exceeds ``--rtol``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_run(output_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (run_dir,) = [p for p in output_dir.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    start = time.monotonic()
    with log.open("w") as fh:
        done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.monotonic() - start


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="examples per micro-batch (per process)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ddp_equivalence.json")
    args = parser.parse_args()

    import accelerate
    import torch
    import transformers

    from hfx.testing import save_tiny_model

    n = args.processes
    common = [
        "plugin=finetune", "data.path=sentiment", "data.max_train_samples=200", "data.max_eval_samples=64",
        "data.max_length=32", "finetune.classifier_dropout=0", f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}", "train.warmup_steps=0", "train.learning_rate=1e-3", "train.log_every=1",
        "train.eval_every=10",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="hfx-ddp-") as tmp_name:
        tmp = Path(tmp_name)
        model = save_tiny_model(tmp / "bert0", "bert", "base", dropout=0.0)
        common.append(f"model={model}")
        ddp_cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(n),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port()), "-m", "hfx", "run", *common,
                   "train.gradient_accumulation_steps=1", f"output_dir={tmp / 'ddp'}"]
        one_cmd = [sys.executable, "-m", "hfx", "run", *common, f"train.gradient_accumulation_steps={n}",
                   f"output_dir={tmp / 'one'}"]
        ddp_s = _timed(ddp_cmd, env, tmp / "ddp.log")
        one_s = _timed(one_cmd, env, tmp / "one.log")
        (s_ddp, m_ddp), (s_one, m_one) = _read_run(tmp / "ddp"), _read_run(tmp / "one")

    losses = [(r["step"], r["train_loss"]) for r in m_ddp if "train_loss" in r]
    losses_one = [(r["step"], r["train_loss"]) for r in m_one if "train_loss" in r]
    evals = [(r["step"], {k: v for k, v in r.items() if k.startswith("eval_")}) for r in m_ddp if "eval_loss" in r]
    evals_one = [(r["step"], {k: v for k, v in r.items() if k.startswith("eval_")}) for r in m_one if "eval_loss" in r]
    same_steps = [s for s, _ in losses] == [s for s, _ in losses_one] and [s for s, _ in evals] == [s for s, _ in evals_one]
    loss_rel = [_rel(a, b) for (_, a), (_, b) in zip(losses, losses_one, strict=False)]
    eval_rel = [_rel(a[k], b[k]) for (_, a), (_, b) in zip(evals, evals_one, strict=False) for k in b]
    worst = max(loss_rel + eval_rel + [_rel(s_ddp["train"]["train_loss"], s_one["train"]["train_loss"])])
    passed = same_steps and s_ddp["processes"] == n and worst <= args.rtol
    result = {
        "what": f"{n} processes (DDP, gloo, CPU), accumulation 1 vs 1 process, accumulation {n}; "
                f"batch {args.batch_size} per micro-batch, {args.steps} optimizer steps, tiny BERT without dropout",
        "passed": passed,
        "rtol": args.rtol,
        "tolerance_reason": "all-reduce averages (g0+...)/N while one process sums g_i/N; for N=2 both are exact "
                            "in float (halving is exact, a 2-term sum is order-free), so 0.0 is expected; more "
                            "processes or another reduction order may differ by float rounding (~1e-7 relative)",
        "max_relative_difference": worst,
        "final_train_loss": {"ddp": s_ddp["train"]["train_loss"], "single": s_one["train"]["train_loss"]},
        "final_eval": {"ddp": s_ddp["after"], "single": s_one["after"]},
        "processes_reported": {"ddp": s_ddp["processes"], "single": s_one["processes"]},
        "train_loss_per_step [ddp, single]": {
            str(step): [a, b] for (step, a), (_, b) in zip(losses, losses_one, strict=False)},
        "evaluations [ddp, single]": {
            str(step): {k: [a[k], b.get(k)] for k in a} for (step, a), (_, b) in zip(evals, evals_one, strict=False)},
        "seconds": {"ddp": round(ddp_s, 1), "single": round(one_s, 1)},
        "command_ddp": "OMP_NUM_THREADS=1 " + " ".join(ddp_cmd[1:]).replace(str(tmp), "$TMP"),
        "command_single": "OMP_NUM_THREADS=1 " + " ".join(one_cmd[1:]).replace(str(tmp), "$TMP"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "accelerate": accelerate.__version__, "transformers": transformers.__version__},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)  # innermost lists of numbers on one line: [ddp, single]
    args.out.write_text(re.sub(r"\[\s+([^\[\]{}]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n")
    print(f"{'PASS' if passed else 'FAIL'}: max relative difference {worst:.1e} (rtol {args.rtol}); "
          f"final train loss {losses[-1][1]:.7f} ({n} processes) vs {losses_one[-1][1]:.7f} (1 process); "
          f"wrote {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
