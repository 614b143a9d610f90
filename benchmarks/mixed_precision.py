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
"""

from __future__ import annotations

import argparse
import contextlib
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--worker", nargs=2, metavar=("LIBRARY", "PRECISION"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--with-bf16", action="store_true", help="also force bf16 where the probe says it is emulated")
    args = parser.parse_args()
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
