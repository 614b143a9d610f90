"""One table across ways to adapt smollm2-135m to the bundled sentiment_foobar task (label words foo/bar).

    python benchmarks/adaptation_table.py --methods lora,prefix --seeds 0 --steps 200   # curves of seed 0
    python benchmarks/adaptation_table.py --methods lora --seeds 1,2 --steps lora=150   # more seeds
    python benchmarks/adaptation_table.py --report                                      # table + plot only

Rows: zero-shot; 4-shot with random examples (lm-eval's sampler, seed 1234) and with the 4 nearest (KATE,
minilm), both through the icl plugin; prompt tuning, prefix tuning and LoRA (each through ``hfx.apply``) and
full fine-tuning (every weight), all trained the same way: AdamW (no weight decay), ``--warmup`` steps of
linear warm-up then a constant learning rate (so the accuracy at step k of the curve is what a k-step run
gets), gradient norm clipped at 1, batches of 8 training sentences drawn by the seed, cross-entropy of the
label token only, after the template "Sentence: {text}\\nLabel:". Every row is scored as lm-eval scores
multiple choice: the label word (" foo" / " bar") of larger log-likelihood after the prompt (``acc``), on
all 100 held-out rows, with its 95% Wilson interval; trained rows are scored every ``--eval-every`` steps
(the curve). Training seconds exclude those evaluations.

Resumable: each finished run appends one line to benchmarks/results/adaptation_runs.jsonl and a run already
there (same method, seed, steps and settings) is skipped, so the script can be stopped and restarted on a
shared CPU. ``--report`` (also done after every run) writes adaptation_table.{md,json} and
adaptation_curves.png from that file. No reference library offers this comparison.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "adaptation_runs.jsonl"
TEMPLATE = "Sentence: {text}\nLabel:"
WORDS = [" foo", " bar"]
INSTRUCTION = "Label negative sentences foo and positive sentences bar."
# method -> (hfx plugin or None, fields for hfx.apply, learning rate); the plugins' defaults where they have one.
TRAINED: dict[str, tuple[str | None, dict[str, Any], float]] = {
    "prompt tuning": ("prompt_tuning", {"num_virtual_tokens": 10, "prompt_tuning_init": "TEXT",
                                        "prompt_tuning_init_text": INSTRUCTION}, 3e-2),
    "prefix tuning": ("prefix_tuning", {"num_virtual_tokens": 10, "prefix_projection": False}, 1e-2),
    "LoRA": ("lora", {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}, 1e-3),
    "full fine-tuning": (None, {}, 2e-5),
}
SHORT = {"prompt": "prompt tuning", "prefix": "prefix tuning", "lora": "LoRA", "full": "full fine-tuning",
         "zero": "zero-shot", "random": "4-shot random", "knn": "4-shot kNN"}


def _adapt(base: Any, tok: Any, method: str) -> Any:
    """A fresh copy of ``base`` with ``method``'s trainable parameters (prefix: started from the instruction)."""
    import hfx

    plugin, fields, _ = TRAINED[method]
    model = copy.deepcopy(base)
    if plugin is None:  # full fine-tuning: every weight trains
        model.requires_grad_(True)
        return model
    if plugin == "prompt_tuning":
        fields = {**fields, "tokenizer": tok}
    model = hfx.apply(model, plugin, **fields)
    if plugin == "prefix_tuning":  # the plugin's default: the prefix starts as the instruction's keys and values
        from hfx_plugins.prefix_tuning import init_from_text
        init_from_text(model, tok, INSTRUCTION + "\n")
    return model


def _score(model: Any, tok: Any, prompts: list[str], labels: torch.Tensor) -> dict[str, Any]:
    """lm-eval ``acc`` over ``prompts`` with its Wilson interval, the gold word's mean NLL, ms per example."""
    from hfx.metrics import wilson_interval
    from hfx_plugins.prompt_learning import label_word_scores

    was = model.training
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        scores = label_word_scores(model, tok, prompts, WORDS, 32, 128)  # (N, C) summed log-likelihoods
    seconds = time.perf_counter() - started
    model.train(was)
    k = int((scores.argmax(-1) == labels).sum())
    lo, hi = wilson_interval(k, len(labels))  # Wilson 1927, as statsmodels' proportion_confint
    gold = scores.gather(1, labels[:, None])[:, 0]  # (N,)
    return {"accuracy": k / len(labels), "ci95": [round(lo, 3), round(hi, 3)],
            "label_nll": round(float(-gold.mean()), 4), "infer_ms_per_example": round(1000 * seconds / len(labels), 1)}


def train_run(base: Any, tok: Any, method: str, seed: int, steps: int, args: argparse.Namespace,
              train: tuple[list[dict[str, list[int]]], Any], test: tuple[list[str], torch.Tensor]) -> dict[str, Any]:
    """Train ``method`` for ``steps`` steps from ``seed``, scoring the held-out rows every ``eval_every`` steps."""
    from transformers import get_scheduler

    rows, collate = train
    torch.manual_seed(seed)  # LoRA's A matrices
    model = _adapt(base, tok, method)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = args.lr.get(method, TRAINED[method][2])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = get_scheduler("constant_with_warmup", opt, num_warmup_steps=args.warmup)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    curve = [{"step": 0, **_score(model, tok, *test)}]
    print(f"  {method} seed {seed} step 0: {curve[-1]}", file=sys.stderr, flush=True)
    model.train()
    train_s, losses, load = 0.0, [], [os.getloadavg()[0]]
    for step in range(1, steps + 1):
        started = time.perf_counter()
        if len(order) < args.batch:
            order += torch.randperm(len(rows), generator=gen).tolist()
        idx, order = order[:args.batch], order[args.batch:]
        batch = collate([rows[i] for i in idx])  # input_ids, attention_mask, labels (B, T); -100 but the label
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                 batch["labels"][:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        train_s += time.perf_counter() - started
        if step % args.eval_every == 0 or step == steps:
            load.append(os.getloadavg()[0])
            curve.append({"step": step, **_score(model, tok, *test), "train_seconds": round(train_s, 1),
                          "train_loss_last10": round(sum(losses[-10:]) / len(losses[-10:]), 4)})
            print(f"  {method} seed {seed} step {step}: {curve[-1]}", file=sys.stderr, flush=True)
    trainable = sum(p.numel() for p in params)
    return {"accuracy": curve[-1]["accuracy"], "ci95": curve[-1]["ci95"], "trainable_params": trainable,
            "train_seconds": round(train_s, 1), "infer_ms_per_example": curve[-1]["infer_ms_per_example"],
            "lr": lr, "curve": curve, "load_avg": [min(load), max(load)]}


def shot_run(base: Any, tok: Any, selection: str, k: int) -> dict[str, Any]:
    """Zero-shot (``k`` = 0) or ``k``-shot prompting through the icl plugin (lm-eval ``acc``)."""
    from hfx.metrics import wilson_interval
    from hfx_plugins.icl import IclConfig, classification_prompts, load_classification_task, score_choices

    task = load_classification_task()
    cfg = IclConfig(num_fewshot=k, fewshot_selection=selection)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with torch.no_grad():
        prompts, _ = classification_prompts(tok, task, cfg, task.label_words, base)
        res = score_choices(base, tok, prompts, [task.label_words] * len(prompts), task.test["label"],
                            batch_size=cfg.batch_size)
    per = (time.perf_counter() - started) / len(prompts)
    lo, hi = wilson_interval(round(res.acc * len(prompts)), len(prompts))
    return {"accuracy": res.acc, "ci95": [round(lo, 3), round(hi, 3)], "trainable_params": 0, "train_seconds": 0.0,
            "infer_ms_per_example": round(1000 * per, 1), "load_avg": [load, os.getloadavg()[0]]}


def _done() -> list[dict[str, Any]]:
    if not RUNS.exists():
        return []
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


def _key(r: dict[str, Any]) -> tuple:
    return (r["method"], r.get("seed"), r.get("steps"), r.get("lr"))


def _pairs(text: str, cast: Any) -> dict[str, Any]:
    """"lora=150,prefix=100" -> {"LoRA": 150, ...}; a bare value applies to every trained method."""
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.rpartition("=")
        for method in ([SHORT[name]] if name else list(TRAINED)):
            out[method] = cast(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="zero,random,knn,lora,prefix,prompt,full",
                    help="comma-separated: " + ", ".join(f"{k} ({v})" for k, v in SHORT.items()))
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the trained rows")
    ap.add_argument("--steps", default="200", help="training steps: one number, or method=steps pairs")
    ap.add_argument("--lr", default="", help="learning rates as method=lr pairs (default: TRAINED's)")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--k", type=int, default=4, help="few-shot examples")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--report", action="store_true", help="only write the table and plot from the runs file")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of adaptation_runs.jsonl and the report")
    args = ap.parse_args()
    global RUNS
    RUNS = args.out / "adaptation_runs.jsonl"
    from adaptation_report import write_report  # benchmarks/adaptation_report.py, beside this file

    if args.report:
        write_report(_done(), args.out)
        return
    torch.set_num_threads(args.threads)
    steps, args.lr = _pairs(args.steps, int), _pairs(args.lr, float)
    from hfx.data import load_bundled
    from hfx.models.loading import load_model
    from hfx_plugins.prompt_learning import collate, encode_rows

    base, tok = load_model("smollm2-135m", "causal-lm")
    base.eval()
    base.requires_grad_(False)
    data = load_bundled("sentiment_foobar")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    train = (encode_rows(tok, [TEMPLATE.format(text=t) for t in data["train"]["text"]],
                         [WORDS[y] for y in data["train"]["label"]], 128), collate(pad))
    test = ([TEMPLATE.format(text=t) for t in data["test"]["text"]], torch.tensor(data["test"]["label"]))
    for name in args.methods.split(","):
        method = SHORT[name]
        shots = name in ("zero", "random", "knn")
        for seed in ([None] if shots else [int(s) for s in args.seeds.split(",")]):
            n = None if shots else steps[method]
            key = (method, seed, n, None if shots else args.lr.get(method, TRAINED[method][2]))
            if any(_key(r) == key for r in _done()):
                print(f"{method} seed {seed} steps {n}: done, skipped", file=sys.stderr)
                continue
            print(f"{method} seed {seed} steps {n}", file=sys.stderr, flush=True)
            if shots:
                res = shot_run(base, tok, "random" if name == "zero" else name, 0 if name == "zero" else args.k)
            else:
                res = train_run(base, tok, method, seed, n, args, train, test)
            row = {"method": method, "seed": seed, "steps": n, **res, "batch": None if shots else args.batch,
                   "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
            args.out.mkdir(parents=True, exist_ok=True)
            with RUNS.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{method} seed {seed}: acc {res['accuracy']:.3f} {res['ci95']}", file=sys.stderr, flush=True)
            write_report(_done(), args.out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
