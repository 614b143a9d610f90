"""One prepared run on a single NVIDIA GPU: hfx against its reference libraries, ratios in one results file.

    bash benchmarks/gpu/prepare.sh             # here (with network): wheels the GPU image lacks -> benchmarks/gpu/wheels
    bash benchmarks/gpu/run.sh                 # there (no network): installs those wheels, then runs this script
    python benchmarks/gpu/run.py --device cpu --smoke    # the CPU path on tiny models (in the default tests)

Sections (each timed and written as it finishes, so a run cut short still leaves its results):

1. ``quant``: hfx's int8 (per channel) and int4 (g64) quantizer on the device against bitsandbytes' int8
   (``Linear8bitLt``) and nf4 (``Linear4bit``, blocksize 64) on the same weights: mean relative error of
   the layer outputs; with bitsandbytes absent the row says so.
2. ``lora``: LoRA (r=8, q/v) training step time and peak memory, hfx vs peft, under bf16 autocast on CUDA
   (fp32 on the CPU); ``qlora``: the same on a 4-bit base (hfx int4 g64 vs peft + bitsandbytes nf4).
3. ``embed``: ``hfx.embed`` encode vs sentence-transformers on the same model and sentences (sentences/s).
4. ``distill``: ``hfx run plugin=distill preset=decoder`` on the device, with the run's summary (skipped
   with ``--smoke``, which has no real model).

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak RSS on the CPU. The results
go to ``benchmarks/results/gpu.json`` / ``.md`` (``--out`` for elsewhere) with the command that made them.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _decoder(smoke: bool, device: str) -> tuple[Any, Any]:
    if smoke:
        from hfx.testing import tiny_llama, tiny_tokenizer

        return tiny_llama().to(device), tiny_tokenizer("llama")
    from hfx.models.loading import load_model

    model, tok = load_model("smollm2-135m", "causal-lm")
    return model.to(device), tok


def quant_section(device: str, smoke: bool) -> list[dict[str, Any]]:
    """Relative output error of hfx's quantizer and bitsandbytes' on the same random layer."""
    from hfx_plugins.quant import QuantLinear

    torch.manual_seed(0)
    size = 256 if smoke else 4096
    dense = torch.nn.Linear(size, size).to(device)
    x = torch.randn(16, size, device=device)
    ref = dense(x)
    rows = []
    for name, layer in (("hfx int8 per channel", QuantLinear.from_float(dense, 8, 0, False)),
                        ("hfx int4 g64", QuantLinear.from_float(dense, 4, 64, False))):
        with torch.no_grad():
            err = ((layer.to(device)(x) - ref).norm() / ref.norm()).item()
        rows.append({"method": name, "relative_error": err})
    try:
        from hfx_plugins.quant.measure import bnb_quantize

        for kind in ("int8", "nf4"):
            holder = torch.nn.Sequential(copy.deepcopy(dense).cpu())
            layer = bnb_quantize(holder, kind, ["0"])[0].to(device)
            with torch.no_grad():
                err = ((layer(x).float() - ref).norm() / ref.norm()).item()
            rows.append({"method": f"bitsandbytes {kind}", "relative_error": err})
    except ImportError as err:
        rows.append({"method": "bitsandbytes", "relative_error": None, "note": f"not installed: {err}"})
    return rows


def _lora_step_time(model: Any, library: str, device: str, steps: int, quant: bool) -> dict[str, float]:
    fields = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    if library == "hfx":
        import hfx

        if quant:
            model = hfx.apply(model, "quant", bits=4, group_size=64)
        model = hfx.apply(model, "lora", **fields)
    else:
        from peft import LoraConfig, get_peft_model

        if quant:
            from hfx_plugins.quant.measure import bnb_quantize

            model = bnb_quantize(model.cpu(), "nf4").to(device)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **fields))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(3, model.config.vocab_size, (4, 128), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:  # two warm-up steps: kernel selection, allocator growth
            times.append(time.perf_counter() - start)
    times.sort()
    return {"step_s": times[len(times) // 2], "peak_mb": _peak_mb(device), "loss": loss.item()}


def lora_section(device: str, smoke: bool, quant: bool) -> dict[str, Any]:
    base, _ = _decoder(smoke, device)
    out = {lib: _lora_step_time(copy.deepcopy(base), lib, device, 3 if smoke else 10, quant) for lib in ("hfx", "peft")}
    out["step_hfx_over_peft"] = out["hfx"]["step_s"] / out["peft"]["step_s"]
    out["peak_hfx_over_peft"] = out["hfx"]["peak_mb"] / out["peft"]["peak_mb"]
    return out


def embed_section(device: str, smoke: bool) -> dict[str, Any]:
    import hfx
    from hfx.data.text import pydoc_sentences

    sentences = pydoc_sentences()[: 64 if smoke else 2000]
    if smoke:
        import tempfile

        from hfx.testing import save_tiny_model

        folder = save_tiny_model(Path(tempfile.mkdtemp()), "bert", "base")
        embedder = hfx.embed(str(folder), pooling="mean").to(device)
    else:
        embedder = hfx.embed("minilm").to(device)
    embedder.encode(sentences[:8], batch_size=64)
    _sync(device)
    start = time.perf_counter()
    embedder.encode(sentences, batch_size=64)
    _sync(device)
    ours = len(sentences) / (time.perf_counter() - start)
    out: dict[str, Any] = {"hfx_sentences_per_s": ours}
    if not smoke:
        from sentence_transformers import SentenceTransformer

        from hfx.models.zoo import resolve_model

        st = SentenceTransformer(str(resolve_model("minilm")), device=device)
        st.encode(sentences[:8], batch_size=64)
        _sync(device)
        start = time.perf_counter()
        st.encode(sentences, batch_size=64)
        _sync(device)
        out["st_sentences_per_s"] = len(sentences) / (time.perf_counter() - start)
        out["hfx_over_st_speed"] = ours / out["st_sentences_per_s"]
    return out


def distill_section(device: str, steps: int) -> dict[str, Any]:
    from hfx.runner.run import run

    result = run(["plugin=distill", "preset=decoder", f"train.max_steps={steps}", "output_dir=/tmp/hfx-gpu-runs"])
    return {"before": result.before, "after": result.after, "summary": result.summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny models, a few steps: checks that the script runs")
    parser.add_argument("--distill-steps", type=int, default=400)
    parser.add_argument("--skip", nargs="*", default=[], choices=("quant", "lora", "qlora", "embed", "distill"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu/run.py: no CUDA device here; use --device cpu --smoke for the CPU path")
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    result: dict[str, Any] = {"command": "python benchmarks/gpu/run.py " + " ".join(sys.argv[1:]), "device": name,
                              "torch": torch.__version__, "sections": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_smoke" if args.smoke else "gpu"
    sections = {
        "quant": lambda: quant_section(args.device, args.smoke),
        "lora": lambda: lora_section(args.device, args.smoke, quant=False),
        "qlora": lambda: lora_section(args.device, args.smoke, quant=True),
        "embed": lambda: embed_section(args.device, args.smoke),
        "distill": lambda: distill_section(args.device, args.distill_steps),
    }
    for key, fn in sections.items():
        if key in args.skip or (args.smoke and key == "distill"):
            continue
        started = time.time()
        try:
            result["sections"][key] = {"result": fn(), "seconds": round(time.time() - started, 1)}
        except Exception as err:  # one failing section must not lose the others' figures
            result["sections"][key] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        print(key, json.dumps(result["sections"][key], default=str)[:400], flush=True)
        tmp = args.out / f"{stem}.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.replace(args.out / f"{stem}.json")
    failed = [k for k, v in result["sections"].items() if "error" in v]
    if failed:
        sys.exit(f"benchmarks/gpu/run.py: sections failed: {', '.join(failed)} (see {args.out / stem}.json)")


if __name__ == "__main__":
    main()
