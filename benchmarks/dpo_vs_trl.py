"""hfx.DPOTrainer against trl 1.16's DPOTrainer: time per update and peak memory, same model, pairs and steps.

    python benchmarks/dpo_vs_trl.py             # writes benchmarks/results/dpo_vs_trl.{json,md}

Both train ``smollm2-135m`` with the same LoRA initialisation (``hfx.testing.adapt_with`` from one seed: hfx's
lora and peft's, r=16 on q/k/v/o) on the same best-vs-worst pairs of the bundled ``rankings`` for ``--steps``
updates of ``--batch`` pairs (AdamW, constant lr, the same TrainingArguments), their reference being the
adapter-free base (hfx: the adapter disabled; trl: its frozen copy of the fresh adapter, whose B is zero). Time
per update is the mean over the updates after the first (warm-up); peak memory is CUDA's peak allocation on a
GPU, else the peak resident set size above the process's size before the trainer was built, sampled every
10 ms. Each trainer runs in a process of its own (freed memory that the allocator keeps would otherwise hide
the second one's growth), one after the other, on a shared machine: compare the ratios only.
The final training loss of each is reported too (the same data, so they should agree closely).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


class _Peak:
    """Peak memory above the start: CUDA's allocator on a GPU, else the resident set size sampled every 10 ms."""

    def __init__(self, cuda: bool) -> None:
        import psutil

        self.cuda, self.proc, self.peak, self.stop = cuda, psutil.Process(), 0, threading.Event()

    def __enter__(self) -> _Peak:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.proc.memory_info().rss
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()


def _step_times(trainer: Any) -> list[float]:
    """Wall seconds of each optimizer step, from a callback."""
    from transformers import TrainerCallback

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Clock())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8, help="pairs per update")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m", help="offline name or folder")
    parser.add_argument("--only", choices=["hfx", "trl"], help="run one trainer and print its row (used internally)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only:
        print("RESULT " + json.dumps(_run(args.only, args)))
        return
    results = {}
    for name in ("hfx", "trl"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], capture_output=True, text=True)
        rows = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not rows:
            raise SystemExit(f"{name} run failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(rows[-1][len("RESULT "):])
    _report(results, args)


def _run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``name``'s DPOTrainer for ``args.steps`` updates; its time per update, peak memory and last loss."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainingArguments
    from trl import DPOConfig as TrlConfig
    from trl import DPOTrainer as TrlTrainer

    import hfx
    from hfx.models.zoo import resolve_model
    from hfx.testing import adapt_with
    from hfx_plugins.dpo import DPOConfig, preference_pairs
    from hfx_plugins.reward import load_rankings

    cuda = torch.cuda.is_available()
    path = resolve_model(args.model)
    pairs = preference_pairs(load_rankings("rankings", "train"), "best_vs_worst")
    lora = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    common = dict(max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=args.lr,
                  lr_scheduler_type="constant", seed=0, report_to="none", save_strategy="no", logging_steps=1,
                  use_cpu=not cuda, bf16=False, disable_tqdm=True)
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = adapt_with("hfx" if name == "hfx" else "peft", base, "lora", "LoraConfig", "CAUSAL_LM", seed=0, **lora)
    if cuda:
        model = model.cuda()
    with tempfile.TemporaryDirectory() as tmp, _Peak(cuda) as peak:
        if name == "hfx":
            trainer = hfx.DPOTrainer(model, TrainingArguments(output_dir=tmp, **common), train_dataset=pairs,
                                     processing_class=tok, dpo_config=DPOConfig(beta=args.beta, max_length=128))
        else:
            trainer = TrlTrainer(model, args=TrlConfig(output_dir=tmp, beta=args.beta, max_length=128, **common),
                                 train_dataset=datasets.Dataset.from_list(pairs), processing_class=tok)
        trainer.remove_callback(PrinterCallback)
        times = _step_times(trainer)
        trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    warm = times[1:] or times
    return {"s_per_update": round(sum(warm) / len(warm), 3), "peak_mib": round(peak.peak / 2**20, 1),
            "final_loss": round(float(losses[-1]), 5) if losses else None, "train_pairs": len(pairs),
            "device": torch.cuda.get_device_name() if cuda else "cpu"}


def _report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    h, t = results["hfx"], results["trl"]
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": (results["hfx"]["device"] if results["hfx"]["device"] != "cpu" else
                    f"{platform.machine()}, {os.cpu_count()} cores shared (load average {os.getloadavg()[0]:.1f} at "
                    f"the end), {args.threads} threads") + f", torch {torch.__version__}",
        "settings": vars(args), "train_pairs": results["hfx"]["train_pairs"], "results": results,
        "hfx_over_trl_time": round(h["s_per_update"] / t["s_per_update"], 3),
        "hfx_over_trl_memory": round(h["peak_mib"] / t["peak_mib"], 3) if t["peak_mib"] else None,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dpo_vs_trl.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# DPO: hfx.DPOTrainer vs trl 1.16 DPOTrainer (smollm2-135m + LoRA r=16, best-vs-worst pairs)",
        "",
        f"Command: `{result['command']}` ({result['date']}). Machine: {result['machine']}.",
        "",
        "| trainer | s / update (after the first) | peak memory MiB | final loss |",
        "|---|---|---|---|",
        *[f"| {n} | {r['s_per_update']} | {r['peak_mib']} | {r['final_loss']} |" for n, r in results.items()],
        "",
        f"hfx / trl: time {result['hfx_over_trl_time']}x, memory {result['hfx_over_trl_memory']}x "
        f"({args.steps} updates of {args.batch} pairs).",
        "",
    ]
    (RESULTS / "dpo_vs_trl.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
