"""Quantized layers at decode (1 token) and prefill (512 tokens), and greedy decoding, side by side in one run.

    python benchmarks/quant_kernels.py                 # layers + smollm2-135m decoding (a few minutes)
    python benchmarks/quant_kernels.py --skip-decode   # layers only

For each shape (576->1536, 1536->576, 2048^2, 4096^2; smollm2's MLP and square layers of larger models):
fp32 matmul; hfx int8 (per output channel, asymmetric) and hfx int4 (groups of 64, asymmetric) through the
kernel ``QuantLinear`` chooses at inference (``plugins/quant/kernels.py``, chosen by ``prepare_kernels`` before
any timing); torch's own int8 and int4 CPU kernels (``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``) on
the same codes; bitsandbytes int8 and nf4 layers. All in this one process, in interleaved rounds (each round
times every column in turn, so a passing load hits all alike); best of ``--rounds`` rounds x 3 calls at one
token, of ``--rounds // 4`` rounds x 1 call at 512 tokens (torch's int kernels there: one call); ratios to fp32. Then
greedy decoding of smollm2-135m (64 new tokens) in tokens/s for fp32, hfx int8, hfx int4 and bitsandbytes nf4.

Writes ``benchmarks/results/quant_kernels.json`` and ``.md``. Targets: at one token, hfx int8 and int4 no
slower than the fastest torch kernel for that format, and int8 <= 1.0x fp32; at 512 tokens <= 1.1x fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from hfx_plugins.quant import kernels, native
from hfx_plugins.quant.layer import QuantLinear

OUT = Path(__file__).parent / "results"
SHAPES = [(576, 1536), (1536, 576), (2048, 2048), (4096, 4096)]  # (in, out)


def _best(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    return best


def _interleaved(fns: dict, rounds: int, inner: int) -> dict[str, float]:
    """Best time of each function over ``rounds`` rounds that run them in turn (``inner`` timed calls each,
    after one untimed call that brings its weights back into the caches): a load that comes and goes (other
    jobs on a shared machine) hits every column alike instead of whichever ran at that moment."""
    best = dict.fromkeys(fns, float("inf"))
    with torch.no_grad():
        for _ in range(rounds):
            for name, fn in fns.items():
                fn()
                for _ in range(inner):
                    start = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - start)
    return best


def _bnb(dense: nn.Linear, kind: str) -> nn.Module:
    from hfx_plugins.quant.measure import bnb_quantize

    holder = nn.Sequential(copy.deepcopy(dense))
    return bnb_quantize(holder, kind, ["0"])[0]


def layer_rows(rounds: int) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    for inp, out in SHAPES:
        torch.manual_seed(0)
        dense = nn.Linear(inp, out)
        q8 = QuantLinear.from_float(dense, 8, 0, False, clip_steps=0)
        q4 = QuantLinear.from_float(dense, 4, 64, False, clip_steps=0)
        kernels.prepare_kernels(nn.Sequential(q8, q4), tokens=(1, 512))  # the kernel choice, before any timing
        for m in (1, 512):
            x = torch.randn(m, inp)
            fns = {"fp32": lambda: dense(x), "hfx_int8": lambda: q8(x), "hfx_int4": lambda: q4(x)}  # noqa: B023
            for kind in ("int8", "nf4"):
                try:
                    layer = _bnb(dense, kind)
                    fns[f"bnb_{kind}"] = lambda layer=layer: layer(x)  # noqa: B023
                except Exception as err:  # bitsandbytes' CPU support varies by version: report, don't stop
                    fns[f"bnb_{kind}"] = f"failed: {type(err).__name__}"
            timed = {k: v for k, v in fns.items() if callable(v)}
            for name, layer in (("hfx_int8", q8), ("hfx_int4", q4)):
                chosen = layer.__dict__["_hfx_kernel"][">64"]
                if m > 1 and chosen.startswith("cdequant"):  # the only work a prompt adds to fp32's GEMM
                    threads = 1 if chosen.endswith("_1t") else torch.get_num_threads()
                    w = torch.empty(out, inp)
                    timed[f"{name}_dequant_only"] = lambda lay=layer, t=threads, w=w: native.dequantize(lay, t, out=w)
            if m == 1:  # torch's CPU int kernels take 35x-100x fp32's time at 512 tokens: timed alone below
                if "torch_int8" in kernels.applicable(q8):
                    timed["torch_int8"] = lambda: kernels.KERNELS["torch_int8"](q8, x, True)  # noqa: B023
                if "torch_int4" in kernels.applicable(q4):
                    timed["torch_int4"] = lambda: kernels.KERNELS["torch_int4"](q4, x, True)  # noqa: B023
            best = _interleaved(timed, rounds if m == 1 else max(2, rounds // 4), 3 if m == 1 else 1)
            row: dict[str, float | str] = {"shape": f"{inp}->{out}", "tokens": m}
            row.update({f"{k}_ms": v * 1e3 for k, v in best.items()})
            row.update({f"{k}_ms": v for k, v in fns.items() if not callable(v)})
            row["hfx_int8_kernel"] = q8.__dict__["_hfx_kernel"]["1" if m == 1 else ">64"]
            row["hfx_int4_kernel"] = q4.__dict__["_hfx_kernel"]["1" if m == 1 else ">64"]
            if m > 1:
                if "torch_int8" in kernels.applicable(q8):
                    row["torch_int8_ms"] = _best(lambda: kernels.KERNELS["torch_int8"](q8, x, True), 1) * 1e3  # noqa: B023
                if "torch_int4" in kernels.applicable(q4):
                    row["torch_int4_ms"] = _best(lambda: kernels.KERNELS["torch_int4"](q4, x, True), 1) * 1e3  # noqa: B023
            for key in [k for k in row if k.endswith("_ms") and k != "fp32_ms" and isinstance(row[k], float)]:
                row[key.replace("_ms", "_vs_fp32")] = row[key] / row["fp32_ms"]  # type: ignore[operator]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def decode_rows(new_tokens: int) -> list[dict[str, float | str]]:
    import hfx
    from hfx.models.loading import load_model
    from hfx_plugins.quant.measure import bnb_quantize

    base, tok = load_model("smollm2-135m", "causal-lm")
    prompt = tok("Write one sentence about the sea.", return_tensors="pt")
    rows = []
    for name in ("fp32", "hfx int8", "hfx int4 g64", "bnb nf4"):
        model = copy.deepcopy(base).eval()
        if name == "hfx int8":
            model = hfx.apply(model, "quant", bits=8, group_size=0)
        elif name == "hfx int4 g64":
            model = hfx.apply(model, "quant", bits=4, group_size=64)
        elif name == "bnb nf4":
            model = bnb_quantize(model, "nf4")
        if name.startswith("hfx"):  # the kernel choice, out of the timed region
            kernels.prepare_kernels(model, tokens=(1, prompt["input_ids"].shape[1]))
        with torch.no_grad():
            model.generate(**prompt, max_new_tokens=4, do_sample=False)  # warm-up
            start = time.perf_counter()
            out = model.generate(**prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            seconds = time.perf_counter() - start
        made = out.shape[1] - prompt["input_ids"].shape[1]
        rows.append({"model": name, "tokens_per_s": made / seconds, "new_tokens": made,
                     "text": tok.decode(out[0, prompt["input_ids"].shape[1]:][:24], skip_special_tokens=True)})
        print(json.dumps(rows[-1]), flush=True)
        del model
    return rows


def _md(result: dict) -> str:
    lines = [f"# Quantized layer kernels and decoding\n\nCommand: `{result['command']}` ({result['seconds']} s). "
             f"Machine: {result['machine']}, {result['threads']} threads, torch {result['torch']}. Best of "
             f"{result['rounds']} interleaved rounds x 3 calls at 1 token, {max(2, result['rounds'] // 4)} rounds x 1 call "
             "at 512 (torch's int kernels there: 1 call), one process; ratios are to fp32 on the same input. Load average "
             f"(1/5/15 min) at start {result['load_average_start']}, at end {result['load_average_end']} on "
             f"{os.cpu_count()} cores.\n",
             "| shape | tokens | fp32 ms | hfx int8 (kernel) | hfx int4 g64 (kernel) | torch int8pack | torch int4pack | "
             "bnb int8 | bnb nf4 | C dequantize alone, int8 / int4 |", "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(row: dict, key: str, digits: int = 2) -> str:
        v = row.get(f"{key}_vs_fp32")
        return "-" if v is None else f"{v:.{digits}f}x"

    for r in result["layers"]:
        lines.append(f"| {r['shape']} | {r['tokens']} | {r['fp32_ms']:.3f} | {cell(r, 'hfx_int8')} ({r['hfx_int8_kernel']}) | "
                     f"{cell(r, 'hfx_int4')} ({r['hfx_int4_kernel']}) | {cell(r, 'torch_int8')} | {cell(r, 'torch_int4')} | "
                     f"{cell(r, 'bnb_int8')} | {cell(r, 'bnb_nf4')} | {cell(r, 'hfx_int8_dequant_only', 3)} / "
                     f"{cell(r, 'hfx_int4_dequant_only', 3)} |")
    if result.get("decode"):
        lines += ["", "Greedy decoding, smollm2-135m, 64 new tokens:", "", "| model | tokens/s |", "|---|---|"]
        lines += [f"| {r['model']} | {r['tokens_per_s']:.1f} |" for r in result["decode"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    result = {"command": "python benchmarks/quant_kernels.py " + " ".join(sys.argv[1:]), "rounds": args.rounds,
              "load_average_start": [round(v, 2) for v in os.getloadavg()],
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "layers": layer_rows(args.rounds)}
    result["decode"] = [] if args.skip_decode else decode_rows(args.new_tokens)
    result["seconds"] = round(time.time() - started, 1)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quant_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "quant_kernels.md").write_text(_md(result))
    print(_md(result))


if __name__ == "__main__":
    main()
