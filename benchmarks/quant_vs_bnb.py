"""hfx ``quant`` vs bitsandbytes, side by side in one run: error, perplexity, size, load memory, layer speed.

    python benchmarks/quant_vs_bnb.py            # full run (smollm2-135m and minilm); over an hour on 2 busy cores
    python benchmarks/quant_vs_bnb.py --quick    # 2 windows, no embedding table: a smoke test
    python benchmarks/quant_vs_bnb.py --windows 2 --table 4:128,4:128:gptq --perplexity-only --out /tmp/q
                                                 # a few rows only, results elsewhere (the committed ones stay)

Writes ``benchmarks/results/quant_vs_bnb.json`` and ``.md``. Targets:

- int8 per channel: perplexity within 1% of fp32;
- int4 group 128: perplexity increase no larger than bitsandbytes nf4's on the same text (the best hfx int4 g128
  row, GPTQ, calibrated on the 32 x 512 pydoc tokens after the evaluation windows; the round-to-nearest row is
  reported beside it);
- int4 group 128: at most 4.5 bits per parameter counting scales and zero points;
- peak process memory loading the int4 model vs the fp32 one and running one forward (fresh subprocesses);
- quantized linear layer speed vs fp32 and vs bitsandbytes (no target: memory is the win on this CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
OUT = HERE / "results"
_OUT = [OUT]  # where _write puts the results (--out)


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MB: VmRSS (now) or VmHWM (peak since exec).

    VmHWM rather than getrusage's ru_maxrss: ru_maxrss survives fork + exec, so a child started from this
    (large) process would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_load(kind: str, path: str) -> None:
    """Run in a fresh process: load one model and run one forward pass (so every weight is really read:
    safetensors are memory-mapped and untouched pages cost nothing); print RSS before, peak and after (MB)."""
    import transformers  # noqa: F401  (the same imports for both kinds, before the baseline)

    import hfx_plugins.quant  # noqa: F401

    base = _status_mb("VmRSS")
    t = time.perf_counter()
    if kind == "fp32":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        from hfx_plugins.quant import load_quantized

        model = load_quantized(path)
    with torch.no_grad():
        model(input_ids=torch.arange(8).view(1, 8))
    secs = time.perf_counter() - t
    print(json.dumps({"baseline_mb": base, "peak_mb": _status_mb("VmHWM"), "after_mb": _status_mb("VmRSS"),
                      "load_and_forward_s": secs, "stored_tensors": sum(t.numel() for t in model.state_dict().values())}))


def load_memory(fp32_path: Path, q_path: Path) -> dict[str, dict[str, float]]:
    out = {}
    for kind, path in (("fp32", fp32_path), ("hfx int4 g128", q_path)):
        res = subprocess.run([sys.executable, __file__, "--child", "fp32" if kind == "fp32" else "int4", str(path)],
                             capture_output=True, text=True, check=True)
        out[kind] = json.loads(res.stdout.strip().splitlines()[-1])
        out[kind]["peak_minus_baseline_mb"] = out[kind]["peak_mb"] - out[kind]["baseline_mb"]
    return out


def layer_speed(rounds: int = 15) -> list[dict[str, float | str]]:
    """Median ms per call of one smollm2-shaped layer, every method timed in the same interleaved rounds."""
    from hfx_plugins.quant.layer import QuantLinear
    from hfx_plugins.quant.measure import bnb_quantize

    rows = []
    for inp, outp in ((576, 1536), (1536, 576)):
        lin = torch.nn.Linear(inp, outp, bias=False).eval()
        holder = torch.nn.Sequential(torch.nn.Linear(inp, outp, bias=False))
        holder[0].weight.data = lin.weight.data.clone()
        methods = {
            "fp32 nn.Linear": lin,
            "hfx int8 per channel (weight-only)": QuantLinear.from_float(lin, 8, 0, True, 0),
            "hfx int8 per channel, int8 activations (torch._int_mm)": QuantLinear.from_float(lin, 8, 0, True, 0, "dynamic"),
            "hfx int4 g128 (weight-only)": QuantLinear.from_float(lin, 4, 128, False, 0),
        }
        for kind in ("int8", "nf4"):
            import copy

            methods[f"bnb {kind}"] = bnb_quantize(copy.deepcopy(holder), kind, ["0"])[0]
        for tokens in (1, 512):
            x = torch.randn(tokens, inp)
            times: dict[str, list[float]] = {k: [] for k in methods}
            with torch.no_grad():
                for m in methods.values():
                    m(x)  # warm-up
                for _ in range(rounds):
                    for k, m in methods.items():
                        t = time.perf_counter()
                        m(x)
                        times[k].append((time.perf_counter() - t) * 1e3)
            fp = statistics.median(times["fp32 nn.Linear"])
            for k, v in times.items():
                rows.append({"layer": f"{inp}->{outp}", "tokens": tokens, "method": k, "ms": statistics.median(v),
                             "vs fp32": statistics.median(v) / fp})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--windows", type=int, default=12, help="512-token windows of pydoc_data.topics")
    parser.add_argument("--resume", action="store_true", help="keep the sections already in the results file")
    parser.add_argument("--table", default="8:0,4:128,4:128:gptq,3:64,3:64:gptq,2:32",
                        help="hfx rows, bits:group_size[:gptq], comma-separated (the targets need 8:0 and a 4:128 row)")
    parser.add_argument("--perplexity-only", action="store_true",
                        help="skip the load-memory, layer-speed and embedding sections")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of quant_vs_bnb.json / .md")
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        return child_load(*args.child)
    _OUT[0] = args.out
    from hfx.data.text import pydoc_token_windows
    from hfx.models.loading import load_model
    from hfx.models.zoo import resolve_model
    from hfx.tables import print_table
    from hfx_plugins.quant.apply import apply
    from hfx_plugins.quant.calibration import lm_calibration
    from hfx_plugins.quant.checks import error_table
    from hfx_plugins.quant.config import QuantConfig, QuantRunConfig
    from hfx_plugins.quant.io import save
    from hfx_plugins.quant.tables import embedding_rows, ppl_rows

    started = time.time()
    table = args.table.split(",")
    result: dict = {"command": "python benchmarks/quant_vs_bnb.py" + (" --quick" if args.quick else "")
                    + (f" --windows {args.windows}" if args.windows != 12 else "")
                    + (f" --table {args.table}" if args.table != parser.get_default("table") else "")
                    + (" --perplexity-only" if args.perplexity_only else ""),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared with other "
                               f"developers (load average {os.getloadavg()[0]:.1f} at start)",
                    "torch": torch.__version__, "bitsandbytes": __import__("bitsandbytes").__version__}
    if args.resume and (args.out / "quant_vs_bnb.json").is_file():
        done = json.loads((args.out / "quant_vs_bnb.json").read_text())
        done["command"] = done["command"] + " ; then " + result["command"] + " --resume"
        done["seconds_before_resume"] = done.get("seconds", 0)
        done["machine"] = done["machine"] + f"; resumed at load average {os.getloadavg()[0]:.1f}"
        result = done
    if "error_randn_1024" not in result and not args.perplexity_only:
        result["error_randn_1024"] = error_table(torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0)))
        print_table("randn(1024, 1024): int4 g64 vs bnb 4-bit bs64", result["error_randn_1024"])

    path = resolve_model("smollm2-135m")
    fresh = lambda: load_model("smollm2-135m", "causal-lm")[0].eval()  # noqa: E731
    if "load_memory_mb" not in result and not args.perplexity_only:
        with tempfile.TemporaryDirectory() as tmp:  # cheap sections first, results written after each
            q = apply(fresh(), QuantConfig(bits=4, group_size=128))
            save(q, Path(tmp) / "int4")
            del q
            result["load_memory_mb"] = load_memory(Path(path), Path(tmp) / "int4")
        _write(result, started)
    if "layer_speed" not in result and not args.perplexity_only:
        result["layer_speed"] = layer_speed()
        print_table("layer speed (median ms per call)", result["layer_speed"])
        _write(result, started)

    windows_n = 2 if args.quick else args.windows
    _, tok = load_model("smollm2-135m", "causal-lm")
    windows = pydoc_token_windows(tok, 512, windows_n)
    result["windows"] = windows_n
    cfg = QuantRunConfig(table=table)
    # GPTQ's calibration: the 32 x 512 tokens that follow the evaluation windows (disjoint from them)
    calibration = lm_calibration(tok, cfg, windows.numel())
    result["calibration"] = (f"GPTQ rows: {cfg.calibration_samples} x {cfg.calibration_window} pydoc tokens after "
                             f"the {windows_n} evaluation windows (disjoint)")
    rows, _ = ppl_rows(fresh, windows, cfg, reference_kinds=("int8", "nf4"),  # fp4: see the error and embedding tables
                       calibration=calibration)
    result["perplexity"] = rows
    print_table(f"smollm2-135m, {windows_n} x 512 tokens of pydoc_data.topics", rows)
    by = {(r["method"], r["groups"].split(" ")[0]): r for r in rows}
    nf4 = by[("bnb nf4", "bs64")]
    targets: dict = {}
    if ("hfx int8", "per") in by:
        int8 = by[("hfx int8", "per")]
        targets["int8 perplexity within 1% of fp32"] = {"value_pct": int8["change %"], "pass": int8["change %"] <= 1.0}
    int4_rows = [r for r in rows if r["method"].startswith("hfx int4") and r["groups"].startswith("g128")]
    if int4_rows:
        int4 = min(int4_rows, key=lambda r: r["change %"])  # the best hfx int4 g128 row (GPTQ), RTN kept beside it
        targets["int4 g128 increase <= bnb nf4 increase"] = {
            "hfx_method": int4["method"], "hfx_pct": int4["change %"], "nf4_pct": nf4["change %"],
            **{f"{r['method']}_pct": r["change %"] for r in int4_rows}, "pass": int4["change %"] <= nf4["change %"]}
        targets["int4 g128 <= 4.5 bits/param"] = {"value": int4["bits/param"], "pass": int4["bits/param"] <= 4.5}
    if "load_memory_mb" in result:
        mem = result["load_memory_mb"]
        targets["load memory int4 / fp32 (peak minus baseline)"] = {
            "ratio": mem["hfx int4 g128"]["peak_minus_baseline_mb"] / mem["fp32"]["peak_minus_baseline_mb"]}
    result["targets"] = targets
    _write(result, started)
    if not args.quick and not args.perplexity_only:
        result["embeddings_minilm"] = embedding_rows("minilm", cfg)
        print_table("minilm, 600 pydoc sentences vs fp32", result["embeddings_minilm"])
        _write(result, started)
    print(json.dumps(result["targets"], indent=2))


def _write(result: dict, started: float) -> None:
    """Write the JSON and Markdown results with whatever sections are done (a long run is never lost)."""
    from hfx.tables import markdown_table
    from hfx_plugins.quant.tables import CAVEAT

    result["seconds"] = result.get("seconds_before_resume", 0) + round(time.time() - started)
    out = _OUT[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "quant_vs_bnb.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# quant vs bitsandbytes\n\nCommand: `{result['command']}` ({result['seconds']} s). Machine: {result['machine']}; "
          f"torch {result['torch']}, bitsandbytes {result['bitsandbytes']}. Timings are noisy on a shared CPU; "
          "ratios within one run are what count.\n"]
    if "targets" in result:
        md.append("## Targets\n\n" + "\n".join(f"- {k}: {v}" for k, v in result["targets"].items()) + "\n")
    if "error_randn_1024" in result:
        md.append("## 4-bit error on randn(1024, 1024)\n\n" + markdown_table(result["error_randn_1024"]))
    if "perplexity" in result:
        md.append(f"## smollm2-135m perplexity ({result['windows']} x 512 tokens of pydoc_data.topics)\n\n"
                  + markdown_table(result["perplexity"]) + f"\n{result.get('calibration', '')}\n\nCaveat: {CAVEAT}\n")
    if "embeddings_minilm" in result:
        md.append("## minilm embeddings vs fp32 (600 pydoc sentences)\n\n" + markdown_table(result["embeddings_minilm"])
                  + "\nGPTQ rows: calibrated on the 512 pydoc sentences after the 600 evaluated ones (disjoint).\n")
    if "load_memory_mb" in result:
        md.append("## Peak memory loading + one forward (fresh subprocesses, MB)\n\n" + markdown_table(
            [{"model": k, **{kk: round(vv, 2) for kk, vv in v.items()}} for k, v in result["load_memory_mb"].items()]))
    if "layer_speed" in result:
        md.append("## Layer speed (median ms per call)\n\n" + markdown_table(result["layer_speed"]))
    (out / "quant_vs_bnb.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
