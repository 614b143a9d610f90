"""Peak memory and time per PPO update: hfx's PPOTrainer vs trl 1.12.0's ``trl.experimental.ppo.PPOTrainer``.

    python -m venv /tmp/venv-ppo && . /tmp/venv-ppo/bin/activate
    pip install torch==2.13.0 trl==1.12.0 && pip install -e .      # trl 1.12.0: the last release with PPO
    python benchmarks/ppo_vs_trl.py                                # writes benchmarks/results/ppo_vs_trl.{md,json}

Each side runs in its own fresh subprocess (peak RSS is the process's ``ru_maxrss``, model loading included) on
the same policy, the same reward model, the same prompts and batch, and the same PPO settings; every response
runs to ``response_length`` on both sides (no stop token), so both do the same sampling work. The first update
is a warm-up; the time per update is the mean of the others.

- trl: its documented set-up (``examples/scripts/ppo/ppo.py``): the policy trained in full, a frozen reference
  copy, a value model initialised from the reward model, the reward model: four transformers in memory. Also
  ``trl+peft``: the same with a LoRA ``peft_config`` (the reference is the policy with its adapter disabled).
- hfx: the policy with a LoRA adapter and a value head on its own trunk, the reference the same model with
  the adapter disabled, the reward model: two transformers in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
QUESTIONS = ["Write a short review of the new coffee shop downtown.", "What do you think of rainy Mondays?",
             "Give your honest opinion of the movie Titanic.", "Tell me how you feel about online shopping.",
             "Would you recommend a budget airline flight to a friend? Why?", "Describe your experience with a long train journey.",
             "Write a one-line customer review of fast food burgers.", "In two sentences, how would you rate working from home?"]


def _models(name: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from hfx.models.zoo import resolve_model

    path = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id == tok.eos_token_id:  # trl needs pad != eos (hfx does not); the same tokenizer for both
        tok.pad_token = "<|endoftext|>"
    tok.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(0)
    reward = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    for m in (policy, reward):
        m.config.pad_token_id = tok.pad_token_id
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    return path, tok, policy, reward, [tok(p)["input_ids"] for p in prompts]


def _side(side: str, args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    path, tok, policy, reward, prompts = _models(args.model)
    prompts = (prompts * args.batch_size)[: args.batch_size * (args.updates + 1)]
    times: list[float] = []
    if side == "hfx":
        import hfx
        from hfx_plugins.ppo.config import PPOConfig
        from hfx_plugins.ppo.trainer import PPOTrainer

        policy = hfx.apply(policy, "lora", r=16, lora_alpha=32, target_modules=TARGETS)
        cfg = PPOConfig(learning_rate=1e-4, batch_size=args.batch_size, num_mini_batches=args.num_mini_batches,
                        num_ppo_epochs=args.num_ppo_epochs, response_length=args.response_length, temperature=0.7,
                        stop_token="none")
        trainer = PPOTrainer(cfg, tok, policy, reward_model=reward, train_dataset=[{"input_ids": p} for p in prompts],
                             num_updates=args.updates + 1)
        batches = trainer.batches()
        for _ in range(args.updates + 1):
            start = time.perf_counter()
            trainer.step(*next(batches))
            times.append(time.perf_counter() - start)
    else:
        import datasets
        from transformers import AutoModelForSequenceClassification, TrainerCallback
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        class Clock(TrainerCallback):
            def on_step_end(self, *a, **k):  # once per PPO update
                now = time.perf_counter()
                times.append(now - self.last)
                self.last = now

        clock = Clock()
        value = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        value.config.pad_token_id = tok.pad_token_id
        peft_config, ref = None, None
        if side == "trl+peft":
            from peft import LoraConfig

            peft_config = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, task_type="CAUSAL_LM")
        else:
            from transformers import AutoModelForCausalLM

            ref = AutoModelForCausalLM.from_pretrained(path)
        cfg = PPOConfig(output_dir=tempfile.mkdtemp(prefix="hfx-bench-trl-"), use_cpu=True, bf16=False, report_to=[],
                        learning_rate=1e-4, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                        num_mini_batches=args.num_mini_batches, num_ppo_epochs=args.num_ppo_epochs,
                        response_length=args.response_length, temperature=0.7, stop_token=None,
                        total_episodes=args.batch_size * (args.updates + 1), num_sample_generations=0,
                        save_strategy="no", logging_steps=1000, seed=0, gradient_checkpointing=False)
        data = datasets.Dataset.from_dict({"input_ids": prompts})
        trainer = PPOTrainer(cfg, tok, policy, ref, reward, data, value, eval_dataset=data, callbacks=[clock],
                             peft_config=peft_config)
        clock.last = time.perf_counter()
        trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    timed = times[1:] or times
    return {"side": side, "peak_rss_mib": round(peak, 1), "seconds_per_update": round(sum(timed) / len(timed), 2),
            "update_seconds": [round(t, 2) for t in times]}


def main() -> None:
    """Run each side in its own process (``--side``), then write ``ppo_vs_trl.{json,md}`` under benchmarks/results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["hfx", "trl", "trl+peft"], help="(internal) run one side and print JSON")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-mini-batches", type=int, default=2)
    parser.add_argument("--num-ppo-epochs", type=int, default=2)
    parser.add_argument("--response-length", type=int, default=24)
    parser.add_argument("--updates", type=int, default=2, help="timed updates after one warm-up update")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", default="hfx,trl,trl+peft")
    args = parser.parse_args()
    if args.side:
        print("RESULT " + json.dumps(_side(args.side, args)), flush=True)
        return
    rows = []
    for side in args.sides.split(","):
        cmd = [sys.executable, __file__, "--side", side] + [a for a in sys.argv[1:] if not a.startswith("--sides")]
        env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[7:]))
        print(rows[-1], flush=True)
    import importlib.metadata as md

    hfx_row = next(r for r in rows if r["side"] == "hfx")
    for r in rows:
        r["rss_ratio_hfx_over_this"] = round(hfx_row["peak_rss_mib"] / r["peak_rss_mib"], 3)
        r["time_ratio_hfx_over_this"] = round(hfx_row["seconds_per_update"] / r["seconds_per_update"], 3)
    command = "python benchmarks/ppo_vs_trl.py " + " ".join(sys.argv[1:])
    result = {"command": command, "model": args.model, "batch_size": args.batch_size,
              "num_mini_batches": args.num_mini_batches, "num_ppo_epochs": args.num_ppo_epochs,
              "response_length": args.response_length, "updates_timed": args.updates, "threads": args.threads,
              "versions": {p: md.version(p) for p in ("torch", "transformers", "trl", "peft")}, "rows": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ppo_vs_trl.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# PPO: hfx vs trl {result['versions']['trl']} ({args.model})", "", f"Command: `{command}` (in the "
             "trl==1.12.0 venv; each side in its own subprocess).", "",
             f"Batch {args.batch_size} rollouts x {args.response_length} tokens, {args.num_ppo_epochs} epochs x "
             f"{args.num_mini_batches} mini-batches, {args.threads} threads; mean of {args.updates} updates after a warm-up.",
             "", "| side | peak RSS (MiB) | s / update | hfx RSS / this | hfx time / this |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['side']} | {r['peak_rss_mib']} | {r['seconds_per_update']} | "
                     f"{r['rss_ratio_hfx_over_this']} | {r['time_ratio_hfx_over_this']} |")
    (OUT / "ppo_vs_trl.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
