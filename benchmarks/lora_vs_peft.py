"""hfx's LoRA against peft's on smollm2-135m, side by side: training step time, peak memory, merged inference.

    python benchmarks/lora_vs_peft.py                 # writes benchmarks/results/lora_vs_peft.{json,md}

Setup: r=8 on q_proj and v_proj (lora_alpha 16), batch 4 x 128 tokens of real text (the first
tokens of Python's pydoc_data.topics), AdamW (lr 1e-4), fp32 on the CPU; the same for DoRA.

- Training: every (library, variant) runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own; the
  rounds alternate the library order. Each run takes ``--warmup`` untimed steps, then ``--steps`` timed ones;
  the report gives the median step time over all rounds and the median of the runs' peak RSS. The two
  libraries see identical batches, so their loss curves must agree too (printed as a sanity check).
- Interleaved: both libraries' models in one process, their training steps alternating; the median of the
  per-pair time ratios. On a shared CPU this is the steadier speed figure: each pair runs under the same load.
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
    from hfx.testing import adapt_with

    fields = dict(r=8, lora_alpha=16, target_modules=TARGETS, use_dora=variant == "dora")
    return adapt_with(library, model, "lora", "LoraConfig", "CAUSAL_LM", seed=0, **fields)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One training run in this (fresh) process; returns step times, losses and peak RSS."""
    import hfx.data.text  # noqa: F401  the harness (model loading, data) first, the same in both workers
    import hfx.models.loading  # noqa: F401

    harness_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.library == "hfx":  # then what a user of each library imports, before any tensor is made
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
    return {"step_s": times, "losses": losses, "peak_rss_mb": peak_kb / 1024, "import_rss_mb": import_kb / 1024,
            "library_import_mb": (import_kb - harness_kb) / 1024}


def interleaved(args: argparse.Namespace) -> dict[str, Any]:
    """Both libraries in one process, alternating step by step, so that both see the same machine load."""
    import copy

    model, tok = _model(args.model)
    twin = copy.deepcopy(model)
    models = {"hfx": _adapt(model, "hfx", args.variant), "peft": _adapt(twin, "peft", args.variant)}
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in models.items()}
    times: dict[str, list[float]] = {"hfx": [], "peft": []}
    for i, ids in enumerate(_batches(tok, args.warmup + args.pairs, args.batch, args.seq)):
        for lib in ("hfx", "peft") if i % 2 == 0 else ("peft", "hfx"):
            models[lib].train()
            start = time.perf_counter()
            models[lib](input_ids=ids, labels=ids).loss.backward()
            opts[lib].step()
            opts[lib].zero_grad(set_to_none=True)
            if i >= args.warmup:
                times[lib].append(time.perf_counter() - start)
    return times


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
           "--batch", str(args.batch), "--seq", str(args.seq), "--passes", str(args.passes), "--pairs",
           str(args.pairs), *extra]
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
                            "library_import_mb_median": round(statistics.median(r["library_import_mb"] for r in rs), 1),
                            "losses": rs[0]["losses"]}
        row["step_time_ratio_hfx_over_peft"] = _ratio(row["hfx"]["step_s_median"], row["peft"]["step_s_median"])
        row["peak_memory_ratio_hfx_over_peft"] = _ratio(row["hfx"]["peak_rss_mb_median"], row["peft"]["peak_rss_mb_median"])
        # the same ratio without what importing each library costs (hfx's plugin system: omegaconf, hydra, ...)
        row["peak_memory_ratio_above_imports"] = _ratio(
            row["hfx"]["peak_rss_mb_median"] - row["hfx"]["import_rss_mb_median"],
            row["peft"]["peak_rss_mb_median"] - row["peft"]["import_rss_mb_median"])
        pairs = zip(row["hfx"]["losses"], row["peft"]["losses"], strict=True)
        row["max_rel_loss_diff"] = max(abs(a - b) / abs(b) for a, b in pairs)
        report[variant] = row
    for variant in ("lora", "dora"):
        print(f"interleaved: {variant} ...", file=sys.stderr, flush=True)
        both = _spawn(args, "--interleaved", variant)
        pair_ratios = [h / p for h, p in zip(both["hfx"], both["peft"], strict=True)]
        report[variant]["interleaved"] = {
            "hfx_step_s_median": round(statistics.median(both["hfx"]), 3),
            "peft_step_s_median": round(statistics.median(both["peft"]), 3),
            "step_time_ratio_median_of_pairs": round(statistics.median(pair_ratios), 3),
            "pair_ratios": [round(r, 3) for r in pair_ratios]}
    for variant in ("lora", "dora"):
        print(f"merged inference: {variant} ...", file=sys.stderr, flush=True)
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
        "| memory ratio | ratio above imports | library import (MB) hfx / peft | max rel. loss diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in ("lora", "dora"):
        r = report[v]
        lines.append(f"| {v} | {r['hfx']['step_s_median']} | {r['peft']['step_s_median']} | "
                     f"{r['step_time_ratio_hfx_over_peft']} | {r['hfx']['peak_rss_mb_median']} | "
                     f"{r['peft']['peak_rss_mb_median']} | {r['peak_memory_ratio_hfx_over_peft']} | "
                     f"{r['peak_memory_ratio_above_imports']} | {r['hfx']['library_import_mb_median']} / "
                     f"{r['peft']['library_import_mb_median']} | "
                     f"{r['max_rel_loss_diff']:.1e} |")
    lines += ["", "Interleaved in one process (hfx and peft steps alternate, so both see the same load):", "",
              "| variant | hfx step (s) | peft step (s) | median of per-pair ratios hfx/peft |", "|---|---|---|---|"]
    for v in ("lora", "dora"):
        i = report[v]["interleaved"]
        lines.append(f"| {v} | {i['hfx_step_s_median']} | {i['peft_step_s_median']} | "
                     f"{i['step_time_ratio_median_of_pairs']} |")
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
    p.add_argument("--pairs", type=int, default=8, help="timed step pairs of the interleaved comparison")
    p.add_argument("--worker", nargs=2, metavar=("LIBRARY", "VARIANT"), help=argparse.SUPPRESS)
    p.add_argument("--interleaved", metavar="VARIANT", help=argparse.SUPPRESS)
    p.add_argument("--inference", metavar="VARIANT", help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true", help="print the report instead of writing results files")
    return p


if __name__ == "__main__":
    ns = _parser().parse_args()
    if ns.worker:
        ns.library, ns.variant = ns.worker
        print(json.dumps(worker(ns)))
    elif ns.interleaved:
        ns.variant = ns.interleaved
        print(json.dumps(interleaved(ns)))
    elif ns.inference:
        ns.variant = ns.inference
        print(json.dumps(merged_inference(ns)))
    else:
        result = main(ns)
        print(json.dumps(result, indent=2)) if ns.no_write else write(result)
