"""Quantized layers at decode (1 token) and prefill (512 tokens), and greedy decoding, side by side in one run.

    python benchmarks/quant_kernels.py                 # layers + smollm2-135m decoding (a few minutes)
    python benchmarks/quant_kernels.py --skip-decode   # layers only

For each shape (576->1536, 1536->576, 2048^2, 4096^2; smollm2's MLP and square layers of larger models):
fp32 matmul; hfx int8 (per output channel, asymmetric) and hfx int4 (groups of 64, asymmetric) through the
kernel ``QuantLinear`` chooses at inference (``plugins/quant/kernels.py``); torch's own int8 and int4 CPU
kernels (``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``) on the same codes; bitsandbytes int8 and
nf4 layers. Best of ``--rounds`` timings after a warm-up, all in this one process, ratios to fp32. Then
greedy decoding of smollm2-135m (64 new tokens) in tokens/s for fp32, hfx int8, hfx int4 and bitsandbytes nf4.

Writes ``benchmarks/results/quant_kernels.json`` and ``.md``. Targets: at one token, hfx int8 and int4 no
slower than the fastest torch kernel for that format, and int8 <= 1.0x fp32; at 512 tokens <= 1.1x fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from hfx_plugins.quant import kernels
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
        for m in (1, 512):
            x = torch.randn(m, inp)
            fp32 = _best(lambda: dense(x), rounds)  # noqa: B023
            row: dict[str, float | str] = {"shape": f"{inp}->{out}", "tokens": m, "fp32_ms": fp32 * 1e3}
            for name, layer in (("hfx_int8", q8), ("hfx_int4", q4)):
                row[f"{name}_kernel"] = kernels.choose(layer, m)
                row[f"{name}_ms"] = _best(lambda: layer(x), rounds) * 1e3  # noqa: B023
            # torch's CPU int kernels take 35x-80x fp32's time at 512 tokens: one timed call is enough there.
            torch_rounds = rounds if m == 1 else 1
            if "torch_int8" in kernels.applicable(q8):
                row["torch_int8_ms"] = _best(lambda: kernels.KERNELS["torch_int8"](q8, x), torch_rounds) * 1e3  # noqa: B023
            if "torch_int4" in kernels.applicable(q4):
                row["torch_int4_ms"] = _best(lambda: kernels.KERNELS["torch_int4"](q4, x), torch_rounds) * 1e3  # noqa: B023
            for kind in ("int8", "nf4"):
                try:
                    layer = _bnb(dense, kind)
                    row[f"bnb_{kind}_ms"] = _best(lambda: layer(x), rounds) * 1e3  # noqa: B023
                except Exception as err:  # bitsandbytes' CPU support varies by version: report, don't stop
                    row[f"bnb_{kind}_ms"] = f"failed: {type(err).__name__}"
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
        with torch.no_grad():
            model.generate(**prompt, max_new_tokens=4, do_sample=False)  # warm-up (and kernel choice)
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
             f"{result['rounds']} after a warm-up, one process; ratios are to fp32 on the same input.\n",
             "| shape | tokens | fp32 ms | hfx int8 (kernel) | hfx int4 g64 (kernel) | torch int8pack | torch int4pack | "
             "bnb int8 | bnb nf4 |", "|---|---|---|---|---|---|---|---|---|"]

    def cell(row: dict, key: str) -> str:
        v = row.get(f"{key}_vs_fp32")
        return "-" if v is None else f"{v:.2f}x"

    for r in result["layers"]:
        lines.append(f"| {r['shape']} | {r['tokens']} | {r['fp32_ms']:.3f} | {cell(r, 'hfx_int8')} ({r['hfx_int8_kernel']}) | "
                     f"{cell(r, 'hfx_int4')} ({r['hfx_int4_kernel']}) | {cell(r, 'torch_int8')} | {cell(r, 'torch_int4')} | "
                     f"{cell(r, 'bnb_int8')} | {cell(r, 'bnb_nf4')} |")
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
    args = parser.parse_args()
    started = time.time()
    result = {"command": "python benchmarks/quant_kernels.py " + " ".join(sys.argv[1:]), "rounds": args.rounds,
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "layers": layer_rows(args.rounds)}
    result["decode"] = [] if args.skip_decode else decode_rows(args.new_tokens)
    result["seconds"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quant_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "quant_kernels.md").write_text(_md(result))
    print(_md(result))


if __name__ == "__main__":
    main()
