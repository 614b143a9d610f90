"""hfx's ranking reward model against trl's RewardTrainer on the expanded pairs (same backbone, steps, lr).

    python benchmarks/reward_vs_trl.py          # writes benchmarks/results/reward_vs_trl.{json,md}

Both start from ``smollm2-135m`` with a fresh one-output score head and train the same weights (the head, the
final norm and the last ``--layers`` blocks; the rest frozen) on the bundled ``rankings`` train split for the
same ``--steps`` optimizer steps at the same learning rate (AdamW, linear decay, no warmup: both are
``transformers.Trainer`` loops with the same TrainingArguments):

- hfx: ``hfx.RewardTrainer``, InstructGPT's K-way loss, ``--prompts`` prompts per step (K = 4 texts each);
- trl: ``trl.RewardTrainer`` on ``hfx.rankings_to_pairs`` of the same rows (C(4,2) = 6 pairs per prompt, ties
  dropped), ``2 x --prompts`` pairs per step, so both forward the same number of texts per step.

Both are evaluated the same way on the held-out prompts: every completion scored once (text + EOS, as trl
preprocesses it), pairwise accuracy on the ranked pairs, and Spearman of the scores with VADER's compound
(the gold score, never trained on). trl's model is scored by its own transformers pooling (the rightmost
token that is not the pad id; with smollm2's pad = EOS that is the token before the EOS trl appended: trl
trains and is scored that way); hfx's reads the EOS itself. Wall times are measured in this one run, on a
shared machine: compare the ratio only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def _train_only_last(model: torch.nn.Module, n_layers: int, n_total: int) -> int:
    """Freeze every weight but the score head, the final norm and the last ``n_layers`` blocks; return the count trained."""
    keep = tuple(f"layers.{i}." for i in range(n_total - n_layers, n_total))
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("score") or name == "model.norm.weight" or any(k in name for k in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per hfx step (trl: twice as many pairs)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--layers", type=int, default=2, help="last blocks trained (with the head and final norm)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m", help="offline name or folder (a tiny one for a smoke test)")
    parser.add_argument("--data", default="rankings", help="bundled name or folder with train/test ranking rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments
    from trl import RewardConfig as TrlConfig
    from trl import RewardTrainer as TrlTrainer

    import hfx
    from hfx.models.zoo import resolve_model
    from hfx_plugins.reward import RewardConfig, evaluate_groups, load_rankings, rankings_to_groups

    path = resolve_model(args.model)
    train_rows, test_rows = load_rankings(args.data, "train"), load_rankings(args.data, "test")
    test_groups = rankings_to_groups(test_rows)
    cfg = RewardConfig(max_length=args.max_length, trainable_layers=args.layers, shift_to_zero_mean=False)
    common = dict(max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0,
                  weight_decay=0.0, seed=0, report_to="none", save_strategy="no", logging_steps=8,
                  use_cpu=True, bf16=False, disable_tqdm=True)
    results: dict[str, dict] = {}

    # hfx: K-way ranking loss, one prompt's 4 completions per batch element
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = hfx.apply(AutoModel.from_pretrained(path, dtype=torch.float32), "reward", cfg=cfg)
    n_hfx = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = hfx.RewardTrainer(model=model, args=TrainingArguments(output_dir="/tmp/hfx-reward-bench",
                                per_device_train_batch_size=args.prompts, **common),
                                train_dataset=train_rows, processing_class=tok, reward_config=cfg)
    start = time.perf_counter()
    trainer.train()
    t_hfx = time.perf_counter() - start
    results["hfx"] = {**evaluate_groups(trainer.model, tok, test_groups, cfg), "train_s": round(t_hfx, 1),
                      "trainable_params": n_hfx, "loss": "K-way ranking (InstructGPT)",
                      "texts_per_step": 4 * args.prompts}
    del trainer, model

    # trl: pairwise loss on the expanded pairs
    pairs = hfx.rankings_to_pairs(train_rows)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    ref = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    n_trl = _train_only_last(ref, args.layers, ref.config.num_hidden_layers)
    from datasets import Dataset

    trl_args = TrlConfig(output_dir="/tmp/trl-reward-bench", per_device_train_batch_size=2 * args.prompts,
                         max_length=args.max_length, **common)
    trainer = TrlTrainer(model=ref, args=trl_args, train_dataset=Dataset.from_list(pairs), processing_class=tok)
    start = time.perf_counter()
    trainer.train()
    t_trl = time.perf_counter() - start
    trl_model = trainer.model.eval()
    results["trl"] = {**evaluate_groups(trl_model, tok, test_groups, cfg), "train_s": round(t_trl, 1),
                      "trainable_params": n_trl, "loss": "pairwise -log sigma(r_c - r_r) on expanded pairs",
                      "texts_per_step": 2 * 2 * args.prompts, "pad_token_id": trl_model.config.pad_token_id,
                      "eos_token_id": tok.eos_token_id}

    n_pairs = sum(len(g.pairs) for g in rankings_to_groups(train_rows))
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared (load average {os.getloadavg()[0]:.1f} at the "
                   f"end), torch {torch.__version__}, {args.threads} threads",
        "data": {"train_prompts": len(train_rows), "train_pairs": n_pairs, "test_prompts": len(test_rows),
                 "test_pairs": sum(len(g.pairs) for g in test_groups)},
        "settings": vars(args),
        "results": results,
        "hfx_over_trl_train_time": round(t_hfx / t_trl, 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reward_vs_trl.json").write_text(json.dumps(result, indent=2) + "\n")
    d = result["data"]
    lines = [
        "# Reward model: hfx (K-way ranking loss) vs trl RewardTrainer (expanded pairs)",
        "",
        f"Command: `{result['command']}` ({result['date']}). Machine: {result['machine']}.",
        "",
        f"smollm2-135m + a one-output score head; trained: head, final norm and the last {args.layers} blocks. "
        f"{args.steps} steps, lr {args.lr}, AdamW, linear decay. Bundled `rankings`: {d['train_prompts']} train "
        f"prompts ({d['train_pairs']} ranked pairs), {d['test_prompts']} held-out prompts ({d['test_pairs']} pairs). "
        "Spearman: scores of every held-out completion against VADER's compound (the gold score).",
        "",
        "| trainer | loss | texts / step | held-out pair accuracy | Spearman with gold | margin | train s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name} | {r['loss']} | {r['texts_per_step']} | {r['accuracy']:.4f} | {r.get('spearman', float('nan')):.4f} "
          f"| {r['margin']:.4f} | {r['train_s']} |" for name, r in results.items()],
        "",
        f"hfx / trl training time: {result['hfx_over_trl_train_time']:.2f}x (same texts forwarded per step).",
        "",
    ]
    (RESULTS / "reward_vs_trl.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
