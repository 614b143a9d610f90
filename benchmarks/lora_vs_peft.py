"""hfx's LoRA against peft's on smollm2-135m, side by side: training step time, peak memory, merged inference.

    python benchmarks/lora_vs_peft.py                 # writes benchmarks/results/lora_vs_peft.{json,md}

Setup (issue 3): r=8 on q_proj and v_proj (lora_alpha 16), batch 4 x 128 tokens of real text (the first
tokens of Python's pydoc_data.topics), AdamW (lr 1e-4), fp32 on the CPU; the same for DoRA.

- Training: every (library, variant) runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own; the
  rounds alternate the library order. Each run takes ``--warmup`` untimed steps, then ``--steps`` timed ones;
  the report gives the median step time over all rounds and the median of the runs' peak RSS. The two
  libraries see identical batches, so their loss curves must agree too (printed as a sanity check).
- Merged inference: the LoRA model (B randomised, so the merge changes the weights) merged with
  ``merge_and_unload`` against the base model, forward passes on 4 x 128 tokens, alternated, median time.

Both libraries run the same loop in the same process layout; the only difference is the adapter code.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
TARGETS = ["q_proj", "v_proj"]


def _model(name: str) -> tuple[Any, Any]:
    from hfx.models.loading import load_model

    return load_model(name, "causal-lm")


def _batches(tokenizer: Any, n: int, batch: int, seq: int) -> list[torch.Tensor]:
    from hfx.data.text import pydoc_token_windows

    ids = pydoc_token_windows(tokenizer, window=seq, n_windows=n * batch)  # (n * batch, seq)
    return list(ids.view(n, batch, seq))  # n x (batch, seq)


def _adapt(model: Any, library: str, variant: str) -> Any:
    fields = dict(r=8, lora_alpha=16, target_modules=TARGETS, use_dora=variant == "dora")
    torch.manual_seed(0)
    if library == "hfx":
        import hfx

        return hfx.apply(model, "lora", **fields)
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **fields))


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One training run in this (fresh) process; returns step times, losses and peak RSS."""
    if args.library == "hfx":  # what a user of each library imports, measured before any tensor is made
        from hfx import registry

        registry.get("lora")
    else:
        import peft  # noqa: F401
    import_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model, tok = _model(args.model)
    model = _adapt(model, args.library, args.variant)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, losses = [], []
    for i, ids in enumerate(_batches(tok, args.warmup + args.steps, args.batch, args.seq)):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(elapsed)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"step_s": times, "losses": losses, "peak_rss_mb": peak_kb / 1024, "import_rss_mb": import_kb / 1024}


def merged_inference(args: argparse.Namespace) -> dict[str, Any]:
    """Forward time of the merged model against the base model, alternated, in this process."""
    from hfx_plugins.lora import merge_and_unload

    base, tok = _model(args.model)
    base.eval()
    adapted, _ = _model(args.model)
    adapted = _adapt(adapted, "hfx", args.variant)
    with torch.no_grad():  # a trained-looking adapter: B non-zero, so merging changes the weights
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    merged = merge_and_unload(adapted).eval()
    ids = _batches(tok, 1, args.batch, args.seq)[0]
    times: dict[str, list[float]] = {"base": [], "merged": []}
    with torch.no_grad():
        for i in range(args.warmup + args.passes):
            for name, model in (("base", base), ("merged", merged)) if i % 2 else (("merged", merged), ("base", base)):
                start = time.perf_counter()
                model(input_ids=ids)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    return {"base_s": times["base"], "merged_s": times["merged"]}


def _spawn(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--batch", str(args.batch), "--seq", str(args.seq), "--passes", str(args.passes), *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def main(args: argparse.Namespace) -> dict[str, Any]:
    import peft
    import transformers

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {v: {"hfx": [], "peft": []} for v in ("lora", "dora")}
    for rnd in range(args.rounds):
        for vi, variant in enumerate(("lora", "dora")):
            order = ("hfx", "peft") if (rnd + vi) % 2 == 0 else ("peft", "hfx")  # each goes first equally often
            for library in order:
                print(f"round {rnd + 1}/{args.rounds}: {variant} {library} ...", file=sys.stderr, flush=True)
                runs[variant][library].append(_spawn(args, "--worker", library, variant))
    report: dict[str, Any] = {
        "command": "python benchmarks/lora_vs_peft.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__, "peft": peft.__version__,
                    "transformers": transformers.__version__},
        "setup": {"model": args.model, "r": 8, "lora_alpha": 16, "target_modules": TARGETS, "batch": args.batch,
                  "seq": args.seq, "optimizer": "AdamW lr 1e-4", "dtype": "float32", "warmup_steps": args.warmup,
                  "timed_steps_per_run": args.steps, "rounds": args.rounds},
        "note": "measured on a CPU shared with other developers' jobs at the same time: absolute times are noisy; "
                "the libraries alternate within each round so that both see the same load",
    }
    for variant, libs in runs.items():
        row: dict[str, Any] = {}
        for library, rs in libs.items():
            steps = [t for r in rs for t in r["step_s"]]
            row[library] = {"step_s_median": round(statistics.median(steps), 3), "step_s_all": [round(t, 3) for t in steps],
                            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in rs), 1),
                            "peak_rss_mb_all": [round(r["peak_rss_mb"], 1) for r in rs],
                            "import_rss_mb_median": round(statistics.median(r["import_rss_mb"] for r in rs), 1),
                            "losses": rs[0]["losses"]}
        row["step_time_ratio_hfx_over_peft"] = _ratio(row["hfx"]["step_s_median"], row["peft"]["step_s_median"])
        row["peak_memory_ratio_hfx_over_peft"] = _ratio(row["hfx"]["peak_rss_mb_median"], row["peft"]["peak_rss_mb_median"])
        # the same ratio without what importing each library costs (hfx imports peft, omegaconf, hydra, ...)
        row["peak_memory_ratio_above_imports"] = _ratio(
            row["hfx"]["peak_rss_mb_median"] - row["hfx"]["import_rss_mb_median"],
            row["peft"]["peak_rss_mb_median"] - row["peft"]["import_rss_mb_median"])
        pairs = zip(row["hfx"]["losses"], row["peft"]["losses"], strict=True)
        row["max_rel_loss_diff"] = max(abs(a - b) / abs(b) for a, b in pairs)
        report[variant] = row
    for variant in ("lora", "dora"):
        inf = _spawn(args, "--inference", variant)
        base, merged = statistics.median(inf["base_s"]), statistics.median(inf["merged_s"])
        report[f"merged_inference_{variant}"] = {"base_s_median": round(base, 4), "merged_s_median": round(merged, 4),
                                                 "ratio_merged_over_base": _ratio(merged, base), **inf}
    return report


def write(report: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lora_vs_peft.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# hfx LoRA vs peft on smollm2-135m", "",
        f"Command: `{report['command']}`  ", f"Date: {report['date']}; {report['machine']}  ",
        f"Setup: {report['setup']}  ", f"Note: {report['note']}.", "",
        "| variant | hfx step (s) | peft step (s) | step ratio hfx/peft | hfx peak RSS (MB) | peft peak RSS (MB) "
        "| memory ratio | ratio above imports | max rel. loss diff |", "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in ("lora", "dora"):
        r = report[v]
        lines.append(f"| {v} | {r['hfx']['step_s_median']} | {r['peft']['step_s_median']} | "
                     f"{r['step_time_ratio_hfx_over_peft']} | {r['hfx']['peak_rss_mb_median']} | "
                     f"{r['peft']['peak_rss_mb_median']} | {r['peak_memory_ratio_hfx_over_peft']} | "
                     f"{r['peak_memory_ratio_above_imports']} | "
                     f"{r['max_rel_loss_diff']:.1e} |")
    lines += ["", "| merged model | base forward (s) | merged forward (s) | ratio merged/base |", "|---|---|---|---|"]
    for v in ("lora", "dora"):
        m = report[f"merged_inference_{v}"]
        lines.append(f"| {v} | {m['base_s_median']} | {m['merged_s_median']} | {m['ratio_merged_over_base']} |")
    (RESULTS / "lora_vs_peft.md").write_text("\n".join(lines) + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=4, help="timed training steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps (and passes) first")
    p.add_argument("--rounds", type=int, default=2, help="runs per library and variant, alternating the order")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--passes", type=int, default=10, help="timed forward passes of the inference comparison")
    p.add_argument("--worker", nargs=2, metavar=("LIBRARY", "VARIANT"), help=argparse.SUPPRESS)
    p.add_argument("--inference", metavar="VARIANT", help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true", help="print the report instead of writing results files")
    return p


if __name__ == "__main__":
    ns = _parser().parse_args()
    if ns.worker:
        ns.library, ns.variant = ns.worker
        print(json.dumps(worker(ns)))
    elif ns.inference:
        ns.variant = ns.inference
        print(json.dumps(merged_inference(ns)))
    else:
        result = main(ns)
        print(json.dumps(result, indent=2)) if ns.no_write else write(result)
