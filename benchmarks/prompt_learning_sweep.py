"""Prompt and prefix tuning of smollm2-135m on the bundled sentiment_foobar task, hfx beside peft 0.21.2.

    python benchmarks/prompt_learning_sweep.py --method prefix --lib hfx --steps 150 --lr 1e-2 --eval-at 50,150
    python benchmarks/prompt_learning_sweep.py --method prompt --lib peft --init TEXT --steps 150

One configuration per call (a sweep is a shell loop; run at most two at once on a shared CPU). Both libraries
get the same base model, data order, template ("Sentence: {text}\\nLabel:"), label words (" foo" / " bar"),
batch size, optimiser and schedule as ``hfx run`` (AdamW without weight decay, linear decay after a warm-up,
gradient norm clipped at 1, as :class:`hfx.runner.loop.TrainLoop`), and the loss on the label token only.
Accuracy is lm-eval's ``acc`` on the 100 test sentences (the label word of larger log-likelihood after the
prompt), with its 95% Wilson interval. Each evaluation point appends one JSON line to
benchmarks/results/prompt_learning_sweep.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from hfx.metrics import wilson_interval

RESULTS = Path(__file__).resolve().parent / "results"
TEMPLATE = "Sentence: {text}\nLabel:"
WORDS = (" foo", " bar")
INIT_TEXT = "Label negative sentences foo and positive sentences bar."


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _adapt(args: argparse.Namespace, model: Any, tok: Any) -> tuple[Any, int]:
    """(adapted model, logit offset): peft's prompt-tuned decoder returns the n virtual positions first."""
    if args.method == "prefix":
        fields: dict[str, Any] = {"num_virtual_tokens": args.n, "prefix_projection": args.projection}
        if args.init == "zero":
            fields["init_weights"] = "zero"
        if args.lib == "hfx":
            import hfx
            from hfx_plugins.prefix_tuning import init_from_text
            model = hfx.apply(model, "prefix_tuning", **fields)
            if args.init == "text":
                init_from_text(model, tok, args.init_text + "\n")
            return model, 0
        from peft import PrefixTuningConfig, get_peft_model
        return get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", **fields)), 0
    fields = {"num_virtual_tokens": args.n, "prompt_tuning_init": args.init.upper()}
    if fields["prompt_tuning_init"] == "TEXT":
        fields["prompt_tuning_init_text"] = args.init_text
    if args.lib == "hfx":
        import hfx
        return hfx.apply(model, "prompt_tuning", tokenizer=tok, **fields), 0
    from peft import PromptTuningConfig, get_peft_model
    if fields["prompt_tuning_init"] == "TEXT":
        fields["tokenizer_name_or_path"] = args.tok_dir
    return get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", **fields)), args.n


def _encode(tok: Any, texts: list[str]) -> list[list[int]]:
    return [tok(TEMPLATE.format(text=t))["input_ids"] for t in texts]


def _batch(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask) ``(B, T)`` and each row's last real position ``(B,)``."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask, torch.tensor([len(s) - 1 for s in seqs])


def _label_logprobs(model: Any, seqs: list[list[int]], pad: int, offset: int, word_ids: list[int]) -> torch.Tensor:
    """log p(word | prompt) at each row's last prompt position, ``(B, C)``."""
    ids, mask, last = _batch(seqs, pad)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, offset:]  # (B, T, V)
    at = logits[torch.arange(len(seqs)), last]  # (B, V)
    return at.float().log_softmax(-1)[:, word_ids]  # (B, C)


@torch.no_grad()
def evaluate(model: Any, seqs: list[list[int]], labels: torch.Tensor, pad: int, offset: int,
             word_ids: list[int]) -> dict[str, float]:
    model.eval()
    scores = torch.cat([_label_logprobs(model, seqs[i:i + 32], pad, offset, word_ids)
                        for i in range(0, len(seqs), 32)])  # (N, C)
    model.train()
    k = int((scores.argmax(-1) == labels).sum())
    lo, hi = wilson_interval(k, len(seqs))  # Wilson 1927, as statsmodels' proportion_confint
    gold = scores.gather(1, labels[:, None])[:, 0]  # (N,)
    return {"accuracy": k / len(seqs), "ci95": [round(lo, 3), round(hi, 3)], "label_nll": float(-gold.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=("prefix", "prompt"), required=True)
    ap.add_argument("--lib", choices=("hfx", "peft"), default="hfx")
    ap.add_argument("--n", type=int, default=10, help="virtual tokens")
    ap.add_argument("--init", default="random", help="prefix: random|zero|text (hfx); prompt: RANDOM|SAMPLE_VOCAB|TEXT")
    ap.add_argument("--init-text", default=INIT_TEXT, help="TEXT / text init (prefix: followed by a newline)")
    ap.add_argument("--projection", action="store_true", help="prefix_projection (prefix only)")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--schedule", default="linear")
    ap.add_argument("--eval-at", default="", help="comma-separated steps to evaluate at (the last always)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("SWEEP_THREADS", "1")))

    from transformers import get_scheduler

    from hfx.data.bundled import BUNDLED_DIR
    from hfx.models.loading import load_model, resolve_model

    args.tok_dir = str(resolve_model("smollm2-135m"))
    torch.manual_seed(args.seed)
    model, tok = load_model("smollm2-135m", "causal-lm")
    word_ids = [tok(w)["input_ids"] for w in WORDS]
    assert all(len(w) == 1 for w in word_ids), word_ids
    word_ids = [w[0] for w in word_ids]
    train, test = (_rows(BUNDLED_DIR / f"sentiment_foobar/{s}.jsonl") for s in ("train", "test"))
    train_seqs, test_seqs = _encode(tok, [r["text"] for r in train]), _encode(tok, [r["text"] for r in test])
    train_y, test_y = torch.tensor([r["label"] for r in train]), torch.tensor([r["label"] for r in test])
    pad = tok.pad_token_id or 0
    model, offset = _adapt(args, model, tok)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = get_scheduler(args.schedule, opt, args.warmup, args.steps)
    points = sorted({int(s) for s in args.eval_at.split(",") if s} | {args.steps})
    config = {k: v for k, v in vars(args).items() if k not in ("eval_at", "tok_dir")}
    out = RESULTS / "prompt_learning_sweep.jsonl"
    before = evaluate(model, test_seqs, test_y, pad, offset, word_ids)
    print(json.dumps({"step": 0, **before}), flush=True)
    g = torch.Generator().manual_seed(args.seed)
    order: list[int] = []
    model.train()
    started, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order += torch.randperm(len(train_seqs), generator=g).tolist()
        idx, order = order[:args.batch], order[args.batch:]
        loss = -_label_logprobs(model, [train_seqs[i] for i in idx], pad, offset, word_ids).gather(
            1, train_y[idx][:, None]).mean()  # the label token's cross-entropy over the full vocabulary
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step in points:
            res = {"step": step, **evaluate(model, test_seqs, test_y, pad, offset, word_ids),
                   "train_loss_last10": sum(losses[-10:]) / len(losses[-10:]),
                   "train_seconds": round(time.perf_counter() - started, 1), "load_avg": os.getloadavg()[0]}
            print(json.dumps(res), flush=True)
            with out.open("a") as f:
                f.write(json.dumps({**config, "before": before["accuracy"], **res}) + "\n")


if __name__ == "__main__":
    main()
