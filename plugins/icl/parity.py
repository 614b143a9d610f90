"""hfx's in-context scoring side by side with lm-evaluation-harness's HF backend (PyPI ``lm-eval``).

    from hfx_plugins.icl.parity import lmeval_parity
    report = lmeval_parity("smollm2-135m", num_fewshot=8, limit=40)
    # {"max_abs_loglik_diff": ..., "context_mismatches": 0, "acc_hfx": ..., "acc_lmeval": ..., ...}

lm-eval runs the local task ``plugins/icl/lmeval/sentiment_foobar.yaml`` (the bundled JSONL files, no Hub)
with ``model="hf"`` on the offline model's cache folder (float32, CPU, batch size 1, few-shot seed 1234).
hfx builds its own prompts for the same documents (``tasks.classification_prompts``, random selection with
seed 1234) and scores them with ``scoring.score_choices``; the report compares the prompts string for
string, each request's log-likelihood, and acc / acc_norm.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from hfx.errors import HfxError

__all__ = ["TASK_NAME", "TASK_YAML", "lmeval_parity", "write_task"]

TASK_YAML = Path(__file__).parent / "lmeval" / "sentiment_foobar.yaml"
"""The lm-eval task definition (data paths relative to the repository root)."""
TASK_NAME = "hfx_sentiment_foobar"


def write_task(folder: Path) -> Path:
    """Write the task YAML into ``folder`` with absolute paths to the bundled data files; return the file."""
    from hfx.data import bundled_path

    spec = yaml.safe_load(TASK_YAML.read_text())
    spec["dataset_kwargs"]["data_files"] = {s: str(bundled_path("sentiment_foobar", s)) for s in ("train", "test")}
    out = folder / TASK_YAML.name
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def _run_lmeval(folder: str, num_fewshot: int, limit: int, tmp: Path) -> dict[str, Any]:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise HfxError("the lm-eval comparison needs lm-eval: pip install lm-eval (or tox -e lmeval)") from err
    write_task(tmp)
    return lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": folder, "dtype": "float32"}, tasks=[TASK_NAME], num_fewshot=num_fewshot,
        limit=limit, batch_size=1, device="cpu", log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(tmp)), fewshot_random_seed=1234, verbosity="ERROR",
    )


def lmeval_parity(model: str = "smollm2-135m", num_fewshot: int = 8, limit: int = 40) -> dict[str, float]:
    """Run lm-eval and hfx on the first ``limit`` test documents of sentiment_foobar; compare them.

    Returns:
        ``requests``, ``context_mismatches`` (documents whose prompt differs), ``max_abs_loglik_diff`` (over
        every request), ``acc_hfx`` / ``acc_lmeval``, ``acc_norm_hfx`` / ``acc_norm_lmeval``, and
        ``pred_disagreements`` (documents where either prediction differs).

    Raises:
        HfxError: lm-eval is not installed.
    """
    from hfx.models.loading import load_model
    from hfx.models.zoo import resolve_model
    from hfx.scoring import score_choices
    from hfx_plugins.icl.config import IclConfig
    from hfx_plugins.icl.tasks import classification_prompts, load_classification_task

    folder = str(resolve_model(model))
    with tempfile.TemporaryDirectory() as tmp:
        out = _run_lmeval(folder, num_fewshot, limit, Path(tmp))
    samples = sorted(out["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    metrics = out["results"][TASK_NAME]
    net, tok = load_model(folder, "causal-lm")
    net.eval()
    task = load_classification_task(limit=limit)
    cfg = IclConfig(num_fewshot=num_fewshot, fewshot_selection="random", fewshot_random_seed=1234)
    prompts, _ = classification_prompts(tok, task, cfg, task.label_words, net)
    res = score_choices(net, tok, prompts, [task.label_words] * len(prompts), task.test["label"])
    diffs, mismatches, disagree = [], 0, 0
    for i, sample in enumerate(samples):
        theirs = [float(r[0][0]) for r in sample["resps"]]  # one (loglik, is_greedy) per choice
        mismatches += any(args[0] != prompts[i] for args in sample["arguments"])
        diffs += [abs(a - b) for a, b in zip(res.lls[i], theirs, strict=True)]
        their_pred = max(range(len(theirs)), key=lambda j: (theirs[j], -j))
        norm = [ll / len(c) for ll, c in zip(theirs, task.label_words, strict=True)]
        their_norm = max(range(len(norm)), key=lambda j: (norm[j], -j))
        disagree += (their_pred != res.pred[i]) or (their_norm != res.pred_norm[i])
    return {
        "documents": len(samples), "requests": len(diffs), "context_mismatches": mismatches,
        "max_abs_loglik_diff": max(diffs), "pred_disagreements": disagree,
        "acc_hfx": res.acc, "acc_lmeval": float(metrics["acc,none"]),
        "acc_norm_hfx": res.acc_norm, "acc_norm_lmeval": float(metrics["acc_norm,none"]),
    }
