"""Distillation targets, measured side by side in one run.

    python benchmarks/distill.py          # writes benchmarks/results/distill.{json,md}

Targets: the half-depth student keeps >= 97% of the teacher's held-out score on every downstream metric it
reports, runs >= 1.6x faster, and beats the same student trained without the teacher and the untrained one.
Each score carries its 95% interval (Wilson for the probe's accuracy over 300 test sentences; percentile
bootstrap for the Spearman correlations), and a "beats" is "supported" only where the intervals are
disjoint. Sections (each result is written as soon as it exists):

- ``encoder``: ``hfx run plugin=distill`` (minilm, 6 layers -> 3, embedding MSE on pydoc sentences plus the
  sentiment set's training sentences, teacher cached), which also trains the SimCSE no-teacher baseline;
  scores = the pydoc pairs' Spearman and the sentiment probe's accuracy (kept = student / teacher), beside
  the agreement with the teacher (Spearman of pairwise cosine similarities on 300 held-out sentences). Reference, same
  student init, same sentences, steps, batch, learning rate and warm-up: sentence-transformers' own
  layer-reduction distillation (``SentenceTransformerTrainer`` + ``MSELoss``), scored the same way.
- ``decoder``: ``hfx run plugin=distill preset=decoder`` (smollm2-135m, 30 layers -> 15, 0.5 forward KL at T=1 + 0.5 CE
  on pydoc text) with the hard-label baseline; score = held-out perplexity, kept = teacher ppl / student ppl.
- ``loss``: hfx's KD loss against trl's ``generalized_jsd_loss`` on (4, 128, 49152) logits (smollm2's
  vocabulary), forward + backward, alternated, median time.

Speeds are forward passes of teacher and student timed in turn in one process (fastest of the repeats).
The CPU is shared with other jobs: absolute times are noisy, ratios measured side by side are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _hfx_run(args: list[str], out: Path) -> dict[str, Any]:
    from hfx.runner.run import run

    started = time.perf_counter()
    res = run([*args, f"output_dir={out}"])
    rows = json.loads((res.run_dir / "comparison.json").read_text())
    return {"command": "hfx run " + " ".join(args), "seconds": round(time.perf_counter() - started, 1),
            "rows": rows, "summary_train": res.summary["train"]}


def _encoder_preset() -> dict[str, Any]:
    """The default preset's student layers, batch, learning rate, steps and sentences, so the reference trains
    the same student on the same sentences."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).parents[1] / "plugins" / "distill" / "configs" / "default.yaml")
    return {"layers": list(cfg.distill.get("layers", [])), "batch": int(cfg.train.batch_size),
            "lr": float(cfg.train.learning_rate), "steps": int(cfg.train.max_steps),
            "warmup": int(cfg.train.get("warmup_steps", 0)),
            "docstrings": int(cfg.distill.get("docstring_sentences", 0)),
            "sentiment": int(cfg.distill.get("sentiment_sentences", 0))}


def _st_reference(steps: int, batch: int, lr: float, warmup: int, eval_sentences: int, work: Path,
                  max_train: int = 0, layers: list[int] | None = None, docstrings: int = 0,
                  sentiment: int = 0) -> dict[str, Any]:
    """sentence-transformers' layer-reduction distillation of the same student on the same sentences."""
    import datasets
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MSELoss

    from hfx.data.bundled import load_bundled
    from hfx.metrics import proportion
    from hfx.models.loading import load_model
    from hfx.models.zoo import resolve_model
    from hfx_plugins.distill.metrics import (
        agreement_estimate,
        default_sentences,
        held_out_pairs,
        pairs_spearman_estimate,
        probe_accuracy,
        without_pair_sentences,
    )
    from hfx_plugins.distill.recipe import _copy_sentence_transformers_files
    from hfx_plugins.distill.student import make_student

    teacher_dir = resolve_model("minilm")
    teacher_st = SentenceTransformer(teacher_dir, device="cpu")
    hf_teacher, tok = load_model("minilm", "base")
    student_dir = work / "st_student"
    make_student(hf_teacher, layers=layers or None).save_pretrained(student_dir)
    tok.save_pretrained(student_dir)
    _copy_sentence_transformers_files(Path(teacher_dir), student_dir)
    student = SentenceTransformer(str(student_dir), device="cpu")
    train, held_out = default_sentences(eval_sentences, docstrings, sentiment)  # the recipe's sentences
    pairs = held_out_pairs()
    train = without_pair_sentences(train, pairs)  # as the recipe: the scored sentences never train
    train = train[:max_train] if max_train else train  # as data.max_train_samples does in the recipe
    labels = teacher_st.encode(train, batch_size=64, convert_to_numpy=True)
    ds = datasets.Dataset.from_dict({"sentence": train, "label": labels.tolist()})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "st_out"), max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
        warmup_steps=warmup, report_to=[], save_strategy="no", use_cpu=True, seed=0, logging_steps=50,
        disable_tqdm=True)
    started = time.perf_counter()
    SentenceTransformerTrainer(model=student, args=args, train_dataset=ds, loss=MSELoss(student)).train()
    train_s = time.perf_counter() - started
    probe = load_bundled("sentiment")

    def enc(model: Any, texts: list[str]) -> torch.Tensor:
        return model.encode(list(texts), batch_size=64, convert_to_tensor=True).cpu()

    acc = probe_accuracy(enc(student, probe["train"]["text"]), probe["train"]["label"],
                         enc(student, probe["test"]["text"]), probe["test"]["label"])
    agree = agreement_estimate(enc(student, held_out), enc(teacher_st, held_out))
    acc_e = proportion(acc, len(probe["test"]))
    pairs_e = pairs_spearman_estimate(lambda texts: enc(student, texts), pairs)
    return {"library": "sentence-transformers", "train_seconds": round(train_s, 1),
            "spearman vs teacher": float(agree), "agreement 95% CI": _ci(agree),
            "sentiment accuracy": float(acc_e), "accuracy 95% CI": _ci(acc_e),
            "pairs spearman": float(pairs_e), "pairs 95% CI": _ci(pairs_e)}


def _ci(est: Any) -> list[float]:
    return [round(est.ci95[0], 4), round(est.ci95[1], 4)]


def _loss_bench(repeats: int) -> dict[str, Any]:
    from trl.experimental.gkd import GKDTrainer

    from hfx.data.collate import IGNORE_INDEX
    from hfx_plugins.distill.losses import kd_loss

    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 128, 49152, generator=g)
    t = torch.randn(4, 128, 49152, generator=g)
    labels = torch.randint(0, 49152, (4, 128), generator=g)
    labels[:, :16] = IGNORE_INDEX
    mask = labels != IGNORE_INDEX
    cases = {
        ("forward_kl", "hfx"): lambda x: kd_loss(x, t, mask, "forward_kl", temperature=1.0),
        ("forward_kl", "trl"): lambda x: GKDTrainer.generalized_jsd_loss(x, t, labels=labels, beta=0.0, temperature=1.0),
        ("jsd", "hfx"): lambda x: kd_loss(x, t, mask, "jsd", beta=0.5, temperature=1.0),
        ("jsd", "trl"): lambda x: GKDTrainer.generalized_jsd_loss(x, t, labels=labels, beta=0.5, temperature=1.0),
    }
    times: dict[tuple[str, str], list[float]] = {k: [] for k in cases}
    values: dict[tuple[str, str], float] = {}
    for _ in range(repeats):
        for key, f in cases.items():
            x = s.clone().requires_grad_(True)
            start = time.perf_counter()
            loss = f(x)
            loss.backward()
            times[key].append(time.perf_counter() - start)
            values[key] = loss.item()
    out = {}
    for div in ("forward_kl", "jsd"):
        h, r = statistics.median(times[(div, "hfx")]), statistics.median(times[(div, "trl")])
        out[div] = {"hfx_s": round(h, 3), "trl_s": round(r, 3), "trl_over_hfx": round(r / h, 2),
                    "abs_diff": abs(values[(div, "hfx")] - values[(div, "trl")])}
    return out


def _targets(rows: list[dict[str, Any]], score: str) -> dict[str, Any]:
    teacher, student, base = rows[0], rows[1], rows[2]
    kept = student[score] / teacher[score] if score != "perplexity" else teacher[score] / student[score]
    better = student[score] > base[score] if score != "perplexity" else student[score] < base[score]
    return {"kept": round(kept, 4), "kept_ok": kept >= 0.97, "speedup": round(student["speed-up"], 3),
            "speedup_ok": student["speed-up"] >= 1.6, "beats_no_teacher": bool(better)}


def _encoder_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per downstream metric: kept (student / teacher) and, against each baseline, whether the distilled student
    scores higher and whether the 95% intervals support it (disjoint)."""
    by = {r["model"]: r for r in rows}
    student = by["student (distilled)"]
    out: dict[str, Any] = {"speedup": round(student["speed-up"], 3), "speedup_ok": student["speed-up"] >= 1.6}
    for metric, ci in (("pairs spearman", "pairs 95% CI"), ("sentiment accuracy", "accuracy 95% CI")):
        kept = student[metric] / by["teacher"][metric]
        entry: dict[str, Any] = {"kept": round(kept, 4), "kept_ok": kept >= 0.97}
        for name in ("no teacher", "untrained"):
            base = by.get(f"student ({name})")
            if base is None:
                continue
            entry[f"beats_{name.replace(' ', '_')}"] = bool(student[metric] > base[metric])
            entry[f"beats_{name.replace(' ', '_')}_supported"] = bool(student[ci][0] > base[ci][1])
        out[metric.replace(" ", "_")] = entry
    return out


def _write(ours: dict[str, Any]) -> None:
    """Merge this process's sections into distill.json (sections may run in separate processes), then the .md."""
    from hfx.io import atomic_write_json, atomic_write_text

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "distill.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update(ours)
    atomic_write_json(path, results)
    lines = ["# Distillation benchmark", "", f"{results['machine']}. Each section names its command and the "
             "load average when it started (2 cores, shared with other jobs): ratios measured side by side count, "
             "absolute times are noisy.", ""]
    for name in ("encoder", "decoder"):
        sec = results.get(name)
        if not sec:
            continue
        lines += [f"## {name}", "", f"Benchmark command: `{sec['bench_command']}` ({sec['date']}, "
                  f"{sec['threads']} torch thread(s), load average {sec.get('load', '?')}); inside it: "
                  f"`{sec['command']}` ({sec['seconds']} s)", ""]
        lines += [f"**{sec['note']}**", ""] if sec.get("note") else []  # e.g. a run that could not finish
        keys = list(sec["rows"][0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in sec["rows"]:
            lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
        lines += ["", f"Targets: `{json.dumps(sec['targets'])}`", ""]
        if name == "encoder" and "reference" in results:
            lines += ["Reference, sentence-transformers layer-reduction distillation (MSELoss) of the same student init "
                      "on the same sentences, steps, batch, lr and warm-up, scored the same way: "
                      f"`{json.dumps(results['reference'])}`", ""]
    if "loss" in results:
        lines += ["## KD loss vs trl generalized_jsd_loss, (4, 128, 49152) fwd+bwd, median of 5", "",
                  f"Benchmark command: `{results['loss'].get('bench_command', 'python benchmarks/distill.py')}`", "",
                  f"`{json.dumps({k: v for k, v in results['loss'].items() if k != 'bench_command'})}`", ""]
    atomic_write_text(RESULTS / "distill.md", "\n".join(lines))


def main() -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder-steps", type=int, default=0, help="0 = the default preset's steps and warm-up")
    p.add_argument("--encoder-train", type=int, default=0, help="first N training sentences (0 = all the preset's: pydoc sentences, plus docstring and sentiment sentences where it adds them)")
    p.add_argument("--decoder-steps", type=int, default=30)
    p.add_argument("--decoder-eval", type=int, default=32, help="held-out pydoc texts for the perplexity")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--skip", nargs="*", default=[], choices=["encoder", "reference", "decoder", "loss"])
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    stamp = {"bench_command": "python benchmarks/distill.py " + " ".join(sys.argv[1:]),
             "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "threads": torch.get_num_threads(),
             "load": round(os.getloadavg()[0], 2)}
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "loss" not in a.skip:
            results["loss"] = {**_loss_bench(5), "bench_command": stamp["bench_command"]}
            _write(results)
        if "encoder" not in a.skip:
            pre = _encoder_preset()
            steps = a.encoder_steps or pre["steps"]
            extra = [f"train.max_steps={steps}", f"train.warmup_steps={min(pre['warmup'], steps // 4)}"] \
                if a.encoder_steps else []  # 0: the preset as `hfx run plugin=distill` runs it
            extra += [f"data.max_train_samples={a.encoder_train}"] if a.encoder_train else []
            sec = _hfx_run(["plugin=distill", "distill.speed_repeats=3", *extra], work / "runs")
            # kept: the two held-out task scores the teacher has as well (pydoc_pairs test Spearman, sentiment
            # probe); the agreement with the teacher (1.0 for the teacher) is shown beside them.
            targets = _encoder_targets(sec["rows"])
            targets["agreement_spearman_vs_teacher"] = round(sec["rows"][1]["spearman vs teacher"], 4)
            sec.update(stamp, targets=targets)
            results["encoder"] = sec
            _write(results)
        if "reference" not in a.skip:  # a section of its own, so it can run in a parallel process
            pre = _encoder_preset()
            steps = a.encoder_steps or pre["steps"]
            results["reference"] = {**_st_reference(steps, pre["batch"], pre["lr"], min(pre["warmup"], steps // 4),
                                                    300, work, a.encoder_train, pre["layers"], pre["docstrings"],
                                                    pre["sentiment"]),
                                    "layers": pre["layers"], "lr": pre["lr"], "steps": steps, **stamp}
            _write(results)
        if "decoder" not in a.skip:
            sec = _hfx_run(["plugin=distill", "preset=decoder", f"train.max_steps={a.decoder_steps}",
                            f"train.warmup_steps={max(1, a.decoder_steps // 8)}",
                            f"data.max_eval_samples={a.decoder_eval}", "distill.speed_repeats=2"], work / "runs")
            sec.update(stamp, targets=_targets(sec["rows"], "perplexity"))
            results["decoder"] = sec
            _write(results)
    print(json.dumps({k: v.get("targets", v) if isinstance(v, dict) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
