"""One table across ways to adapt smollm2-135m to the bundled sentiment_foobar task (label words foo/bar).

    python benchmarks/adaptation_table.py                      # ~10 min on 2 idle CPU cores
    python benchmarks/adaptation_table.py --steps 10 --limit 40   # quicker, noisier

Rows: zero-shot; few-shot with k random examples (lm-eval's sampler, seed 1234) and with the k nearest
(KATE, minilm); prompt tuning, prefix tuning and LoRA (each through ``hfx.apply``), trained for the same
small budget (``--steps`` AdamW steps of ``--batch`` training sentences, loss on the label word only).
Every row is scored the same way, as lm-eval scores multiple choice: the label word (" foo" / " bar") with
the larger summed log-likelihood after "Sentence: <text>\\nLabel:" (``acc``). Columns: accuracy on the
first ``--limit`` test rows, trainable parameters, training seconds, and inference milliseconds per test
example (prompt building, kNN embedding and both choices' scoring included). Writes
benchmarks/results/adaptation_table.{json,md}. No reference library offers this comparison.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

import hfx
from hfx.data.collate import IGNORE_INDEX, pad_rows
from hfx.io import atomic_write_json, atomic_write_text
from hfx.models.loading import load_model
from hfx_plugins.icl import (
    IclConfig,
    classification_prompts,
    encode_pair,
    load_classification_task,
    score_choices,
)

RESULTS = Path(__file__).resolve().parent / "results"


def _label_batches(tok: Any, task: Any, steps: int, batch: int, seed: int) -> list[list[tuple[list[int], int]]]:
    """``steps`` batches of (zero-shot prompt tokens + label token) rows, drawn with a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(task.train), generator=gen).tolist()
    rows = []
    for i in order[: steps * batch]:
        row = task.train[i]
        prompt = task.template.render(dict(row, label_text=""))[0]
        ctx, cont = encode_pair(tok, prompt, " " + task.label_words[row["label"]])
        rows.append((ctx + cont, len(ctx)))
    return [rows[s * batch:(s + 1) * batch] for s in range(steps)]


def _train(model: Any, batches: list, lr: float) -> float:
    """AdamW on the trainable parameters; loss = cross-entropy of the label tokens. Returns seconds."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    started = time.perf_counter()
    for step, rows in enumerate(batches):
        ids, mask = pad_rows([seq for seq, _ in rows], 0)  # (B, T) right-padded
        labels, _ = pad_rows([[IGNORE_INDEX] * n_ctx + seq[n_ctx:] for seq, n_ctx in rows], IGNORE_INDEX)  # (B, T)
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 5 == 0 or step == len(batches) - 1:
            print(f"    step {step + 1}/{len(batches)} loss {loss.item():.4f}", file=sys.stderr)
    model.eval()
    return time.perf_counter() - started


def _evaluate(model: Any, tok: Any, task: Any, cfg: IclConfig) -> tuple[float, float]:
    """(acc, seconds per example) of lm-eval-style scoring with ``cfg``'s prompts."""
    started = time.perf_counter()
    with torch.no_grad():
        prompts, _ = classification_prompts(tok, task, cfg, task.label_words, model)
        res = score_choices(model, tok, prompts, [task.label_words] * len(prompts), task.test["label"],
                            batch_size=cfg.batch_size)
    return res.acc, (time.perf_counter() - started) / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=100, help="test rows (100 = all of sentiment_foobar's test)")
    parser.add_argument("--k", type=int, default=8, help="few-shot examples")
    parser.add_argument("--steps", type=int, default=30, help="training steps of each trained method")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for adaptation_table.{json,md}")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = load_classification_task(limit=args.limit)
    base, tok = load_model(args.model, "causal-lm")
    base.eval()
    total = sum(p.numel() for p in base.parameters())
    zero = IclConfig(num_fewshot=0)
    rows: list[dict[str, Any]] = []

    def add(method: str, acc: float, trainable: int, train_s: float, infer_s: float, notes: str = "") -> None:
        rows.append({"method": method, "accuracy": round(acc, 4), "trainable_params": trainable,
                     "train_seconds": round(train_s, 1), "infer_ms_per_example": round(1000 * infer_s, 1), "notes": notes})
        print(f"{method:<28} acc {acc:.3f}  trainable {trainable:,}  train {train_s:.1f} s  "
              f"infer {1000 * infer_s:.1f} ms/example", file=sys.stderr)

    acc, per = _evaluate(base, tok, task, zero)
    add("zero-shot", acc, 0, 0.0, per)
    for selection in ("random", "knn"):
        acc, per = _evaluate(base, tok, task, dataclasses.replace(zero, num_fewshot=args.k, fewshot_selection=selection))
        add(f"{args.k}-shot {selection}", acc, 0, 0.0, per, "minilm embeddings" if selection == "knn" else "seed 1234")
    batches = _label_batches(tok, task, args.steps, args.batch, args.seed)
    trained = [
        ("prompt tuning", "prompt_tuning", {"num_virtual_tokens": 20, "prompt_tuning_init": "TEXT", "tokenizer": tok,
                                            "prompt_tuning_init_text": "Classify the sentiment of the sentence."}, 3e-2),
        ("prefix tuning", "prefix_tuning", {"num_virtual_tokens": 10}, 1e-2),
        ("LoRA", "lora", {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}, 2e-3),
    ]
    for method, plugin, fields, lr in trained:
        try:
            model = hfx.apply(copy.deepcopy(base), plugin, **fields)
        except Exception as err:  # a plugin that is missing or fails is reported in the table, not hidden
            add(method, float("nan"), 0, 0.0, float("nan"), f"not run: {type(err).__name__}: {err}")
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                seconds = _train(model, batches, lr)
            acc, per = _evaluate(model, tok, task, zero)
        except Exception as err:  # reported in the table, not hidden
            add(method, float("nan"), 0, 0.0, float("nan"), f"failed: {type(err).__name__}: {str(err)[:120]}")
            continue
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        add(method, acc, trainable, seconds, per, f"{args.steps} steps x {args.batch}, AdamW lr {lr:g}")
        del model
    command = "python benchmarks/adaptation_table.py " + " ".join(sys.argv[1:])
    meta = {"command": command.strip(), "model": args.model, "model_params": total, "test_rows": len(task.test),
            "train_pool": len(task.train), "torch_threads": torch.get_num_threads(), "rows": rows}
    atomic_write_json(args.out / "adaptation_table.json", meta)
    lines = [f"# Adapting {args.model} to sentiment_foobar (label words foo/bar)\n", f"`{meta['command']}`; "
             f"{len(task.test)} test rows, scored by the label word's log-likelihood (lm-eval's `acc`); "
             f"{total:,} model parameters; torch threads {meta['torch_threads']}.\n",
             "| method | accuracy | trainable params | train s | inference ms/example | notes |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['accuracy']:.3f} | {r['trainable_params']:,} | {r['train_seconds']} | "
              f"{r['infer_ms_per_example']} | {r['notes']} |" for r in rows]
    atomic_write_text(args.out / "adaptation_table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
