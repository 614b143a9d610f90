"""train.fsdp on CPU: what one rank of 2 holds, and how fast it steps, against one process (smollm2-135m).

    python benchmarks/fsdp_scaling.py              # full fine-tuning, LoRA, QLoRA: 1 vs 2 processes, 3 steps
    python benchmarks/fsdp_scaling.py --steps 2    # quicker

Each configuration runs in fresh processes: one ``python`` process, then two under ``torch.distributed.run``
(gloo), each on one torch thread. The model is sharded by hfx's own code (:func:`hfx.runner.fsdp.shard_model`,
what ``hfx run ... train.fsdp=true`` does on CPU): every decoder block, the tied embeddings + head, the body
and the root. Both runs see the same global batch of 4 x 64 tokens per step (pydoc windows, no padding):
one process takes all 4 rows, each rank 2; every row has the same token count, so the mean loss over the
batch is the mean of the ranks' means and the gradients match. AdamW, lr 1e-4; LoRA r=8 on q,k,v,o; QLoRA
is that LoRA on quant's 4-bit base (group 128, round to nearest), whose packed codes and scales are buffers:
FSDP2 leaves them whole on every rank.

Reported per rank: bytes of parameters (local shards; frozen ones included), gradients and optimizer state
and buffers after the last step (:func:`hfx.runner.fsdp.local_bytes`), peak RSS (``ru_maxrss``; it includes loading the
whole model before sharding and the activations), the median step time (steps after the first), and every
step's loss (averaged over ranks). Target: full fine-tuning's parameters + gradients + optimizer state per
rank <= 0.6x of one process. Step times on a shared 2-core machine mean little: the load average at the
start is written beside them. Writes ``benchmarks/results/fsdp_scaling.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
GLOBAL_ROWS, WINDOW = 4, 64


def worker(mode: str, steps: int) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist

    import hfx
    from hfx.data.text import pydoc_token_windows
    from hfx.models.loading import load_model
    from hfx.runner import fsdp

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m", "causal-lm")
    if mode == "qlora":
        model = hfx.apply(model, "quant", bits=4, group_size=128, clip_steps=0)
    if mode in ("lora", "qlora"):
        model = hfx.apply(model, "lora", r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    if world > 1:
        fsdp.shard_model(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = pydoc_token_windows(tok, window=WINDOW, n_windows=GLOBAL_ROWS * steps).view(steps, GLOBAL_ROWS, WINDOW)
    per_rank = GLOBAL_ROWS // world
    times, losses = [], []
    for i, ids in enumerate(batches):
        mine = ids[rank * per_rank:(rank + 1) * per_rank]  # (per_rank, WINDOW): this rank's rows
        start = time.perf_counter()
        loss = model(input_ids=mine, labels=mine).loss  # mean over this rank's tokens (equal counts everywhere)
        loss.backward()  # FSDP2 reduce-scatters the mean of the ranks' gradients
        opt.step()
        if i < steps - 1:
            opt.zero_grad(set_to_none=True)  # the last step's gradients stay, to be counted
        if i > 0:
            times.append(time.perf_counter() - start)
        value = loss.detach().clone()
        if world > 1:
            dist.all_reduce(value)
            value /= world
        losses.append(value.item())
    result = {"mode": mode, "processes": world, **fsdp.local_bytes(model, opt),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "step_s": statistics.median(times) if times else float("nan"), "losses": losses}
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, result)
        dist.destroy_process_group()
        return gathered if rank == 0 else None  # type: ignore[return-value]
    return [result]  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, processes: int, steps: int) -> list[dict[str, Any]]:
    me = [__file__, "--worker", mode, "--steps", str(steps)]
    cmd = [sys.executable, *me] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *me]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("[{")]
    return json.loads(lines[-1])


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=["full", "lora", "qlora"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.worker:
        rows = worker(args.worker, args.steps)
        if rows is not None:
            print(json.dumps(rows), flush=True)
        return
    import torch

    started, load = time.time(), os.getloadavg()
    result: dict[str, Any] = {"command": "python benchmarks/fsdp_scaling.py " + " ".join(sys.argv[1:]),
                              "load_average_at_start": [round(x, 2) for x in load], "cpus": os.cpu_count(),
                              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                              "steps": args.steps, "global_batch": f"{GLOBAL_ROWS} x {WINDOW} tokens", "modes": {}}
    for mode in ("full", "lora", "qlora"):
        one = _launch(mode, 1, args.steps)[0]
        two = _launch(mode, 2, args.steps)
        held = lambda r: r["parameters"] + r["gradients"] + r["optimizer_state"]  # noqa: E731
        worst_rank = max(two, key=held)
        result["modes"][mode] = {
            "one_process": one, "two_ranks": two,
            "per_rank_over_one": {k: worst_rank[k] / one[k] if one[k] else None
                                  for k in ("parameters", "gradients", "optimizer_state", "buffers")},
            "with_buffers_over_one": (held(worst_rank) + worst_rank["buffers"]) / (held(one) + one["buffers"]),
            "params_grads_optimizer_over_one": held(worst_rank) / held(one),
            "peak_rss_over_one": max(r["peak_rss_mb"] for r in two) / one["peak_rss_mb"],
            "step_time_over_one": max(r["step_s"] for r in two) / one["step_s"],
            "max_abs_loss_difference": max(abs(a - b) for a, b in zip(two[0]["losses"], one["losses"], strict=True)),
        }
        print(json.dumps({mode: result["modes"][mode]}), flush=True)
    full = result["modes"]["full"]
    result["target"] = "full fine-tuning: params+grads+optimizer per rank <= 0.6x one process"
    result["passed"] = full["params_grads_optimizer_over_one"] <= 0.6
    result["seconds"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fsdp_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# train.fsdp: 1 process vs 2 ranks on CPU (smollm2-135m)\n\nCommand: `{result['command']}` "
          f"({result['seconds']} s). {result['cpus']} CPUs, load average at the start {result['load_average_at_start']} "
          f"(a shared machine: the step times are indicative only), torch {result['torch']}, one thread per process, "
          f"gloo. {args.steps} AdamW steps, global batch {result['global_batch']}; bytes after the last step.\n",
          "| mode | processes | rank | parameters MB | gradients MB | optimizer MB | params+grads+opt MB | "
          "buffers MB | peak RSS MB | step s |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, r in result["modes"].items():
        for i, row in enumerate([r["one_process"], *r["two_ranks"]]):
            md.append(f"| {mode} | {row['processes']} | {0 if row['processes'] == 1 else i - 1} | "
                      f"{_mb(row['parameters'])} | {_mb(row['gradients'])} | {_mb(row['optimizer_state'])} | "
                      f"{_mb(row['parameters'] + row['gradients'] + row['optimizer_state'])} | "
                      f"{_mb(row['buffers'])} | {row['peak_rss_mb']:.0f} | {row['step_s']:.2f} |")
    md.append("\n| mode | params+grads+opt per rank / one process | with buffers | peak RSS ratio | step time "
              "ratio | max abs loss difference |\n|---|---:|---:|---:|---:|---:|")
    for mode, r in result["modes"].items():
        md.append(f"| {mode} | {r['params_grads_optimizer_over_one']:.3f} | {r['with_buffers_over_one']:.3f} | "
                  f"{r['peak_rss_over_one']:.3f} | "
                  f"{r['step_time_over_one']:.2f} | {r['max_abs_loss_difference']:.1e} |")
    md.append(f"\nTarget ({result['target']}): {'met' if result['passed'] else 'NOT met'}. Peak RSS includes "
              "the whole model, loaded on every rank before sharding, and the activations, which FSDP does not "
              "shard; LoRA's frozen base is sharded too; QLoRA's packed 4-bit codes and scales (buffers) are not.")
    (args.out / "fsdp_scaling.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
