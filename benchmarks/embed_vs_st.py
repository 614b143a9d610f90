"""hfx's sentence embedder against sentence-transformers on minilm, and FAISS search against brute force.

    python benchmarks/embed_vs_st.py            # writes benchmarks/results/embed_vs_st.{json,md}

1. ``encode`` throughput: the same ``--n`` real sentences (``pydoc_sentences``, 40-300 characters) and the
   same batch size (64), ``hfx.embed("minilm").encode`` against ``SentenceTransformer(minilm).encode``, in one
   process, alternating which library goes first, ``--rounds`` timed rounds after one warm-up; the median
   time of each library and their ratio. The largest difference between the two libraries' vectors is
   reported too.
2. Batch-size invariance: each library encodes the first 200 sentences at batch sizes 1, 7, 32 and 64;
   the largest difference of any vector from its batch-size-1 value.
3. Retrieval: an exact FAISS ``IndexFlatIP`` against brute-force numpy (``q @ C.T``, ``argpartition``, sort)
   for top-10 cosine search, on the real embeddings (the sentences as corpus and queries) and on a larger
   corpus of random unit vectors; whether the top-k ids agree, and the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _brute_force(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ corpus.T  # (Q, N)
    top = np.argpartition(-sims, k, axis=1)[:, :k]  # (Q, k), unordered
    order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)  # (Q, k), best first


def _retrieval(corpus: np.ndarray, queries: np.ndarray, k: int, rounds: int) -> dict[str, Any]:
    from hfx_plugins.embed.index import VectorIndex

    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    index = VectorIndex.build(corpus, "cosine")
    t_faiss, t_numpy = [], []
    for r in range(rounds + 1):
        pair = [("faiss", lambda: index.search(queries, k)), ("numpy", lambda: _brute_force(queries, corpus, k))]
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            t = _timed(fn)
            if r:  # round 0 warms up
                (t_faiss if name == "faiss" else t_numpy).append(t)
    ids_f, ids_n = index.search(queries, k)[1], _brute_force(queries, corpus, k)
    return {
        "corpus": corpus.shape[0], "queries": queries.shape[0], "dim": corpus.shape[1], "k": k,
        "same_top_k_ordered": float((ids_f == ids_n).all(axis=1).mean()),
        "same_top_k_sets": float(np.mean([set(a) == set(b) for a, b in zip(ids_f, ids_n, strict=True)])),
        "faiss_s": statistics.median(t_faiss), "numpy_s": statistics.median(t_numpy),
        "numpy_over_faiss_time": statistics.median(t_numpy) / statistics.median(t_faiss),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000, help="sentences encoded per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both libraries (1: steadier on a CPU shared with other jobs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    import hfx
    from hfx.data.text import pydoc_sentences
    from hfx.models.zoo import resolve_model

    texts = pydoc_sentences()[: args.n]
    ours = hfx.embed("minilm")
    st = SentenceTransformer(resolve_model("minilm"), device="cpu")
    bs = args.batch_size
    ours.encode(texts[:bs], bs)
    st.encode(texts[:bs], batch_size=bs)  # warm-up
    times: dict[str, list[float]] = {"hfx": [], "sentence-transformers": []}
    for r in range(args.rounds):
        order = ["hfx", "sentence-transformers"] if r % 2 == 0 else ["sentence-transformers", "hfx"]
        for lib in order:
            fn = (lambda: ours.encode(texts, bs)) if lib == "hfx" else (lambda: st.encode(texts, batch_size=bs))
            times[lib].append(_timed(fn))
    med = {lib: statistics.median(t) for lib, t in times.items()}
    a, b = ours.encode(texts, bs), st.encode(texts, batch_size=bs)

    invariance = {}
    sub = texts[:200]
    for lib, enc in (("hfx", lambda x, s: ours.encode(x, s)), ("sentence-transformers", lambda x, s: st.encode(x, batch_size=s))):
        ref = enc(sub, 1)
        invariance[lib] = {str(s): float(np.abs(enc(sub, s) - ref).max()) for s in (7, 32, 64)}

    rng = np.random.default_rng(0)
    retrieval = {
        "real_embeddings": _retrieval(a, a, 10, args.rounds),
        "random_vectors": _retrieval(rng.standard_normal((100_000, 384)).astype(np.float32),
                                     rng.standard_normal((1000, 384)).astype(np.float32), 10, args.rounds),
    }
    result = {
        "command": f"python benchmarks/embed_vs_st.py --n {args.n} --rounds {args.rounds} --threads {args.threads}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other developers "
                   f"(load average {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, {torch.get_num_threads()} threads",
        "encode": {
            "texts": len(texts), "batch_size": bs, "rounds": args.rounds,
            "seconds": {lib: [round(t, 3) for t in ts] for lib, ts in times.items()},
            "sentences_per_s": {lib: len(texts) / m for lib, m in med.items()},
            "hfx_over_st_throughput": med["sentence-transformers"] / med["hfx"],
            "max_abs_diff_hfx_vs_st": float(np.abs(a - b).max()),
        },
        "batch_size_invariance_max_abs_diff_vs_batch_1": invariance,
        "retrieval": retrieval,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embed_vs_st.json").write_text(json.dumps(result, indent=2) + "\n")
    e = result["encode"]
    lines = [
        "# embed vs sentence-transformers (minilm) and FAISS vs brute force",
        "",
        f"Command: `{result['command']}` ({result['date']}). Machine: {result['machine']}.",
        "Timings on a shared CPU: only the ratios measured side by side in this one run count.",
        "",
        f"## encode: {e['texts']} pydoc sentences, batch size {bs}, median of {args.rounds} alternating rounds",
        "",
        "| library | sentences/s | seconds per round |",
        "|---|---|---|",
        *[f"| {lib} | {e['sentences_per_s'][lib]:.1f} | {', '.join(map(str, e['seconds'][lib]))} |" for lib in times],
        "",
        f"hfx / sentence-transformers throughput: **{e['hfx_over_st_throughput']:.2f}x** (target >= 1.0x). "
        f"Largest difference between the two libraries' (normalised) vectors: {e['max_abs_diff_hfx_vs_st']:.2e}.",
        "",
        "## The same text at other batch sizes: largest difference from its batch-size-1 vector (200 sentences)",
        "",
        "| library | bs 7 | bs 32 | bs 64 |",
        "|---|---|---|---|",
        *[f"| {lib} | " + " | ".join(f"{v:.2e}" for v in inv.values()) + " |" for lib, inv in invariance.items()],
        "",
        "## Top-10 cosine search: FAISS IndexFlatIP vs brute-force numpy",
        "",
        "| corpus | queries | same top-10 (ordered) | same top-10 (sets) | FAISS s | numpy s | numpy / FAISS time |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name}: {r['corpus']} x {r['dim']} | {r['queries']} | {r['same_top_k_ordered']:.3f} | {r['same_top_k_sets']:.3f} "
          f"| {r['faiss_s']:.4f} | {r['numpy_s']:.4f} | {r['numpy_over_faiss_time']:.2f}x |" for name, r in retrieval.items()],
        "",
    ]
    (RESULTS / "embed_vs_st.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
