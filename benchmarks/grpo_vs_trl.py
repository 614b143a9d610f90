"""Peak memory and time per GRPO update: hfx's GRPOTrainer vs trl 1.16's GRPOTrainer, each in its own process.

    python benchmarks/grpo_vs_trl.py                          # smollm2-135m; writes benchmarks/results/grpo_vs_trl.*
    python benchmarks/grpo_vs_trl.py --model tiny --updates 3 # hfx.testing's tiny Llama: a quick run of the script

Both sides train the same base with the same LoRA (r 16, alpha 32, q/k/v/o), on the same prompts (the bundled
rankings' first train prompts, chat-formatted), with the same group size, completion length, temperature, beta
(> 0, so both compute the reference's log-probs, the adapter disabled) and a reward that is the completion's
length in tokens over 10 (cheap, so the time is the trainers'). Each side runs in a fresh subprocess (peak RSS
is the process's ``ru_maxrss``, model loading included). The first update is a warm-up; the time per update is
the median of the others. Sampling stops at EOS on both sides, so the completions' mean length is reported
beside the time: the sampling work follows it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _setup(model: str, n: int) -> tuple[object, object, list[str]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == "tiny":
        from hfx.testing import tiny_model

        base, tok = tiny_model("llama", "causal-lm")
        return base, tok, ["the function returns", "a class has", "import the module", "print the list"][:n]
    from hfx.data.loading import read_source
    from hfx.models.zoo import resolve_model

    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompts = list(dict.fromkeys(read_source("rankings")["train"]["prompt"]))[:n]  # chat-formatted text
    return base, tok, prompts


def _side(side: str, a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    base, tok, prompts = _setup(a.model, a.prompts)
    g, times, lengths = a.num_generations, [], []
    if side == "hfx":
        import hfx
        from hfx_plugins.grpo import GRPOConfig, GRPOTrainer

        torch.manual_seed(0)
        policy = hfx.apply(base, "lora", r=16, lora_alpha=32, target_modules=TARGETS)
        cfg = GRPOConfig(num_generations=g, batch_size=len(prompts) * g, max_completion_length=a.length,
                         temperature=0.8, beta=0.03, learning_rate=5e-4)
        trainer = GRPOTrainer(cfg, tok, policy, reward_model=lambda qr, am, ctx: am[:, ctx:].sum(1).float() / 10)
        ids = tok(prompts)["input_ids"]
        for _ in range(a.updates):
            start = time.perf_counter()
            stats = trainer.step(ids)
            times.append(time.perf_counter() - start)
            lengths.append(stats["completion_length"])
    else:
        import datasets
        from peft import LoraConfig
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        class Clock(TrainerCallback):
            def on_step_begin(self, *args: object, **kwargs: object) -> None:
                self.start = time.perf_counter()

            def on_step_end(self, *args: object, **kwargs: object) -> None:  # one update: one generation, one step
                times.append(time.perf_counter() - self.start)

        def reward(completion_ids: list[list[int]], **kwargs: object) -> list[float]:
            lengths.append(statistics.fmean(len(c) for c in completion_ids))
            return [len(c) / 10 for c in completion_ids]

        with tempfile.TemporaryDirectory() as tmp:
            args = GRPOConfig(output_dir=tmp, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                              logging_strategy="no", disable_tqdm=True, per_device_train_batch_size=len(prompts) * g,
                              num_generations=g, max_completion_length=a.length, temperature=0.8, beta=0.03,
                              learning_rate=5e-4, max_steps=a.updates, seed=0)
            trainer = GRPOTrainer(model=base, reward_funcs=reward, args=args, processing_class=tok,
                                  train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts] * a.updates),
                                  peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
            trainer.add_callback(Clock())
            trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    return {"side": side, "seconds_per_update": statistics.median(times[1:] or times),
            "completion_length": statistics.fmean(lengths), "peak_rss_mib": peak, "updates": len(times)}


def main() -> None:
    """Run each side in its own process (``--side``), then write ``grpo_vs_trl.{json,md}`` (smollm2) or print (tiny)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--length", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--side", choices=["hfx", "trl"])
    a = p.parse_args()
    if a.side:
        print("RESULT " + json.dumps(_side(a.side, a)), flush=True)
        return
    rows = []
    for side in ("hfx", "trl"):
        cmd = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{side} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(line[7:]))
    hfx_row, trl_row = rows
    ratios = {"time_hfx_over_trl": hfx_row["seconds_per_update"] / trl_row["seconds_per_update"],
              "memory_hfx_over_trl": hfx_row["peak_rss_mib"] / trl_row["peak_rss_mib"]}
    result = {"model": a.model, "settings": {k: v for k, v in vars(a).items() if k != "side"}, "rows": rows, **ratios}
    print(json.dumps(result, indent=2))
    if a.model == "tiny":
        return
    (OUT / "grpo_vs_trl.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# GRPO update: hfx vs trl {_version()} on {a.model}", "",
             f"{a.prompts} prompts x {a.num_generations} completions of at most {a.length} tokens, LoRA r 16 q/k/v/o, "
             f"beta 0.03, {a.threads} threads, {a.updates} updates (median of all but the first).", "",
             "| side | s / update | mean completion length | peak RSS (MiB) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['side']} | {r['seconds_per_update']:.2f} | {r['completion_length']:.1f} | {r['peak_rss_mib']:,.0f} |"
              for r in rows]
    lines += ["", f"hfx / trl: time {ratios['time_hfx_over_trl']:.3f}, memory {ratios['memory_hfx_over_trl']:.3f}"]
    (OUT / "grpo_vs_trl.md").write_text("\n".join(lines) + "\n")


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("trl")


if __name__ == "__main__":
    main()
