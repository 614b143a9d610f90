"""train.mixed_precision on this machine: what ``auto`` chooses, and LoRA step time under each precision.

    python benchmarks/mixed_precision.py              # smollm2-135m, r=8 q/v, 4 x 128 tokens, 8 timed steps
    python benchmarks/mixed_precision.py --steps 3    # quicker

``auto`` is resolved by :func:`hfx.precision.resolve_mixed_precision` (a cached bf16-vs-fp32 matmul probe on
the CPU). Each configuration trains in its own subprocess (fresh allocator, its own peak RSS), in the order
hfx fp32, hfx auto, peft auto, hfx bf16 (forced, to show the cost where bf16 is emulated), with the autocast
accelerate applies for that precision. Reported: the median step time, ratios to hfx fp32 and hfx/peft
under the same precision, and the loss after the last step (the same batches for every run).

Targets: on a CPU with native bf16, auto <= 0.75x hfx fp32 and <= 1.0x peft; on one without, auto chooses
fp32 (ratio about 1.0). Writes ``benchmarks/results/mixed_precision.{json,md}``.

    python benchmarks/mixed_precision.py --interleaved 12   # hfx vs peft under bf16 autocast, one process

``--interleaved N``: both adapted models in one process (same seed, same batches), one bf16 step of each per
round, the order alternating, N rounds after 2 warm-up steps each: on a shared CPU the load changes between
two separate runs far more than between two neighbouring steps. Reported: each library's median step, the
median of the per-round hfx/peft ratios and the 95% t interval of their geometric mean (``hfx.metrics``), and
the largest loss difference (the same computation: it should be at bf16 rounding). Writes
``benchmarks/results/lora_bf16_interleaved.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
RUNS = [("hfx", "no"), ("hfx", "auto"), ("peft", "auto"), ("hfx", "bf16")]


def worker(library: str, precision: str, steps: int) -> dict[str, Any]:
    from hfx.data.text import pydoc_token_windows
    from hfx.models.loading import load_model
    from hfx.precision import resolve_mixed_precision

    choice = resolve_mixed_precision(precision, "cpu")
    model, tok = load_model("smollm2-135m", "causal-lm")
    from hfx.testing import adapt_with

    fields = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    model = adapt_with(library, model, "lora", "LoraConfig", "CAUSAL_LM", seed=0, **fields)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = pydoc_token_windows(tok, window=128, n_windows=4 * (steps + 1)).view(steps + 1, 4, 128)
    times, loss = [], float("nan")
    for i, ids in enumerate(batches):
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if choice.mode == "bf16"
                    else contextlib.nullcontext())
        start = time.perf_counter()
        with autocast:  # what accelerate wraps the forward in for mixed_precision=bf16
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i > 0:  # the first step pays one-off allocations
            times.append(time.perf_counter() - start)
        loss = out.loss.item()
    return {"library": library, "requested": precision, "used": choice.mode, "reason": choice.reason,
            "step_s": statistics.median(times), "last_loss": loss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "lora_dtype": str(next(p.dtype for n, p in model.named_parameters() if "lora_A" in n))}


def layer_profile(repeats: int = 20) -> list[dict[str, Any]]:
    """torch.profiler, side by side: one smollm2 q_proj-shaped LoRA layer (576 -> 576, r=8, 4 x 128 tokens)
    forward + backward under bf16 autocast, hfx's ``LoraLinear`` and peft's ``lora.Linear`` with the same weights.

    Returns one row per aten op that either library calls: calls and self CPU ms per step, hfx and peft.
    """
    import copy

    import peft
    from torch import nn
    from torch.profiler import profile

    from hfx_plugins.lora.layer import LoraLinear

    torch.manual_seed(0)
    base = nn.Linear(576, 576, bias=False).requires_grad_(False)
    ours = LoraLinear(copy.deepcopy(base), False)
    ours.add_adapter("default", 8, 16, 2.0, 0.0, True, False)
    ours.set_active(["default"])
    holder = nn.Module()
    holder.q_proj = copy.deepcopy(base)
    theirs = peft.get_peft_model(holder, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"]))
    theirs = theirs.base_model.model.q_proj
    theirs.load_state_dict(ours.state_dict())  # hfx's keys are peft's
    x0 = torch.randn(4, 128, 576)

    def step(layer: nn.Module) -> None:
        x = x0.clone().requires_grad_(True)  # as a hidden state that earlier adapters make require grad
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.backward(torch.ones_like(y))

    stats: dict[str, dict[str, tuple[int, float]]] = {}
    for name, layer in (("hfx", ours), ("peft", theirs)):
        for _ in range(3):
            step(layer)
        with profile() as prof:
            for _ in range(repeats):
                step(layer)
        stats[name] = {e.key: (e.count // repeats, e.self_cpu_time_total / 1e3 / repeats)
                       for e in prof.key_averages() if e.key.startswith("aten::")}
    ops = sorted(set(stats["hfx"]) | set(stats["peft"]),
                 key=lambda k: -max(stats["hfx"].get(k, (0, 0.0))[1], stats["peft"].get(k, (0, 0.0))[1]))
    return [{"op": k, "hfx_calls": stats["hfx"].get(k, (0, 0.0))[0], "hfx_ms": stats["hfx"].get(k, (0, 0.0))[1],
             "peft_calls": stats["peft"].get(k, (0, 0.0))[0], "peft_ms": stats["peft"].get(k, (0, 0.0))[1]}
            for k in ops]


def interleaved(rounds: int, out: Path) -> dict[str, Any]:
    """hfx and peft LoRA steps under bf16 autocast, alternating in one process (see the module docstring)."""
    import math

    from hfx.data.text import pydoc_token_windows
    from hfx.metrics import t_interval
    from hfx.models.loading import load_model
    from hfx.testing import adapt_with

    fields = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    runs = {}
    for library in ("hfx", "peft"):
        model, tok = load_model("smollm2-135m", "causal-lm")
        model = adapt_with(library, model, "lora", "LoraConfig", "CAUSAL_LM", seed=0, **fields).train()
        runs[library] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))
    batches = pydoc_token_windows(tok, window=128, n_windows=4 * (rounds + 2)).view(rounds + 2, 4, 128)

    def step(library: str, ids: torch.Tensor) -> tuple[float, float]:
        model, opt = runs[library]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start, loss.item()

    times: dict[str, list[float]] = {"hfx": [], "peft": []}
    loss_diff = 0.0
    for i, ids in enumerate(batches):
        order = ("hfx", "peft") if i % 2 == 0 else ("peft", "hfx")
        done = {lib: step(lib, ids) for lib in order}
        loss_diff = max(loss_diff, abs(done["hfx"][1] - done["peft"][1]))
        if i >= 2:  # two warm-up steps each
            for lib in order:
                times[lib].append(done[lib][0])
    ratios = [a / b for a, b in zip(times["hfx"], times["peft"], strict=True)]
    lo, hi = t_interval([math.log(r) for r in ratios])
    result = {"command": "python benchmarks/mixed_precision.py " + " ".join(sys.argv[1:]),
              "machine": platform.processor() or platform.machine(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "load_average_start": os.getloadavg()[0], "rounds": rounds,
              "hfx_step_s": statistics.median(times["hfx"]), "peft_step_s": statistics.median(times["peft"]),
              "median_ratio": statistics.median(ratios),
              "geomean_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios)),
              "geomean_ratio_ci95": [math.exp(lo), math.exp(hi)], "max_loss_diff": loss_diff,
              "ratios": ratios, "times": times}
    out.mkdir(parents=True, exist_ok=True)
    (out / "lora_bf16_interleaved.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (f"# LoRA step under bf16 autocast: hfx vs peft, interleaved\n\nCommand: `{result['command']}`. CPU: "
          f"{result['machine']} ({result['cpu_capability']}), torch {result['torch']}, {result['threads']} threads, "
          f"load average {result['load_average_start']:.1f} at the start (shared machine). smollm2-135m, LoRA r=8 "
          f"q/v, 4 x 128 tokens, {rounds} rounds of one step each (order alternating) after 2 warm-up steps.\n\n"
          "| hfx step s (median) | peft step s (median) | hfx/peft median of ratios | geometric mean [95% t] | "
          "max loss diff |\n|---|---|---|---|---|\n"
          f"| {result['hfx_step_s']:.3f} | {result['peft_step_s']:.3f} | {result['median_ratio']:.3f} | "
          f"{result['geomean_ratio']:.3f} [{math.exp(lo):.3f}, {math.exp(hi):.3f}] | {loss_diff:.2e} |\n")
    rows = layer_profile()
    result["layer_profile"] = rows
    (out / "lora_bf16_interleaved.json").write_text(json.dumps(result, indent=2) + "\n")
    md += ("\nProfile (torch.profiler, `layer_profile`): one q_proj-shaped LoRA layer (576 -> 576, r=8, 4 x 128 tokens), "
           "forward + backward under bf16 autocast, per step; ops with more than 0.01 ms in either library.\n\n"
           "| op | hfx calls | hfx ms | peft calls | peft ms |\n|---|---|---|---|---|\n")
    md += "".join(f"| {r['op']} | {r['hfx_calls']} | {r['hfx_ms']:.3f} | {r['peft_calls']} | {r['peft_ms']:.3f} |\n"
                  for r in rows if max(r["hfx_ms"], r["peft_ms"]) > 0.01)
    (out / "lora_bf16_interleaved.md").write_text(md)
    print(md)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "PRECISION"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--with-bf16", action="store_true", help="also force bf16 where the probe says it is emulated")
    parser.add_argument("--interleaved", type=int, metavar="ROUNDS", help="hfx vs peft bf16 steps in one process")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.interleaved:
        interleaved(args.interleaved, args.out)
        return
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps)))
        return
    started = time.time()
    rows = []
    from hfx.precision import cpu_bf16_probe

    ratio = float(cpu_bf16_probe()["bf16_over_fp32"])
    runs = RUNS if ratio < 2.0 or args.with_bf16 else RUNS[:3]  # emulated bf16: a forced run takes ~ratio x longer
    for library, precision in runs:
        done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--worker", library, precision],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["step_s"]
    for row in rows:
        row["vs_hfx_fp32"] = row["step_s"] / base
    auto_hfx, auto_peft = rows[1], rows[2]
    result = {"command": "python benchmarks/mixed_precision.py " + " ".join(sys.argv[1:]),
              "machine": platform.processor() or platform.machine(), "cpu_capability":
              torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "rows": rows,
              "auto_hfx_over_peft": auto_hfx["step_s"] / auto_peft["step_s"], "bf16_probe_ratio": ratio,
              "seconds": round(time.time() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mixed_precision.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# train.mixed_precision\n\nCommand: `{result['command']}` ({result['seconds']} s). CPU: {result['machine']} "
          f"({result['cpu_capability']}), torch {result['torch']}. smollm2-135m, LoRA r=8 q/v, 4 x 128 tokens, "
          f"median of {args.steps} steps.\n",
          f"`auto` on this machine: **{auto_hfx['used']}**: {auto_hfx['reason']}.\n",
          "| library | requested | used | step s | vs hfx fp32 | last loss | peak RSS MB | LoRA A dtype |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['library']} | {r['requested']} | {r['used']} | {r['step_s']:.3f} | {r['vs_hfx_fp32']:.3f} | "
           f"{r['last_loss']:.4f} | {r['peak_rss_mb']:.0f} | {r['lora_dtype']} |" for r in rows]
    md.append(f"\nhfx / peft under auto: {result['auto_hfx_over_peft']:.3f}.")
    if len(rows) < len(RUNS):
        md.append(f"\nForced bf16 not run: the probe measured bf16 matmuls {ratio:.1f}x slower than fp32 on this CPU "
                  "(`--with-bf16` runs it anyway).")
    (args.out / "mixed_precision.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
