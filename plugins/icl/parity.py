"""hfx's in-context scoring side by side with lm-evaluation-harness's HF backend (PyPI ``lm-eval``).

    from hfx_plugins.icl.parity import lmeval_parity
    report = lmeval_parity("smollm2-135m", num_fewshot=8, limit=40)
    report = lmeval_parity(folder, num_fewshot=4, limit=8, apply_chat_template=True, fewshot_as_multiturn=False)
    # {"max_abs_loglik_diff": ..., "context_mismatches": 0, "token_mismatches": 0, "acc_hfx": ..., ...}

lm-eval runs the local task ``plugins/icl/lmeval/sentiment_foobar.yaml`` (the bundled JSONL files, no Hub)
with its ``HFLM`` on the model's folder (float32, CPU, batch size 1, few-shot seed 1234), with
``apply_chat_template``, ``fewshot_as_multiturn`` and ``system_instruction`` passed to ``simple_evaluate``;
the token ids it scores are recorded at ``HFLM._loglikelihood_tokens`` (the ``(context, continuation),
context_enc, continuation_enc`` triples its ``loglikelihood`` builds). hfx builds its own requests for the
same documents (``tasks.classification_prompts`` with random selection, seed 1234, and
``prompts.continuation_delimiter``), splits them with ``hfx.scoring.encode_pair`` and scores them with
``hfx.scoring.score_choices``; the report compares context strings, continuation strings, token ids, each
request's log-likelihood, and acc / acc_norm. ``lmeval_generation_parity`` does the same for greedy
generation (the chain-of-thought path): the input ids and texts of lm-eval's ``HFLM.generate_until`` beside
``cot.generate_answers``'.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from hfx.errors import HfxError

__all__ = ["TASK_NAME", "TASK_YAML", "lmeval_generation_parity", "lmeval_parity", "write_task"]

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


def _run_lmeval(folder: str, tmp: Path, num_fewshot: int, limit: int, chat: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[list[int], list[int]]]]:
    """lm-eval's results and, per (context, continuation) request, the token ids its HF backend scored."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise HfxError("the lm-eval comparison needs lm-eval 0.4.13: pip install 'hfx[lmeval]' "
                       "(or tox -e lmeval)") from err
    write_task(tmp)
    lm = HFLM(pretrained=folder, dtype="float32", device="cpu", batch_size=1)
    scored: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    inner = lm._loglikelihood_tokens

    def record(requests: list[Any], *args: Any, **kwargs: Any) -> Any:
        scored.update({pair: (list(ctx), list(cont)) for pair, ctx, cont in requests})
        return inner(requests, *args, **kwargs)

    lm._loglikelihood_tokens = record  # type: ignore[method-assign]
    out = lm_eval.simple_evaluate(
        model=lm, tasks=[TASK_NAME], num_fewshot=num_fewshot, limit=limit, log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(tmp)), fewshot_random_seed=1234, verbosity="ERROR",
        apply_chat_template=chat["apply_chat_template"], fewshot_as_multiturn=chat["fewshot_as_multiturn"],
        system_instruction=chat["system_instruction"] or None,
    )
    return out, scored


def lmeval_parity(model: str = "smollm2-135m", num_fewshot: int = 8, limit: int = 40,
                  apply_chat_template: bool = False, fewshot_as_multiturn: bool = True,
                  system_instruction: str = "") -> dict[str, Any]:
    """Run lm-eval and hfx on the first ``limit`` test documents of sentiment_foobar; compare every request.

    Args:
        model: An offline model name or a model folder (e.g. from :func:`chat_model.save_tiny_chat_model`).
        num_fewshot: k, random examples with lm-eval's seed 1234.
        limit: Test documents.
        apply_chat_template, fewshot_as_multiturn, system_instruction: lm-eval's options of the same names
            (hfx's ``IclConfig`` fields).

    Returns:
        ``documents``, ``requests``, ``context_mismatches`` and ``continuation_mismatches`` (requests whose
        strings differ), ``token_mismatches`` (requests whose context or continuation ids differ),
        ``double_bos`` (hfx requests that start with two BOS ids), ``max_abs_loglik_diff`` (over every
        request), ``acc_hfx`` / ``acc_lmeval``, ``acc_norm_hfx`` / ``acc_norm_lmeval``,
        ``pred_disagreements`` (documents where either prediction differs), and ``example``: the first
        request as hfx built it (context, continuation, ids).

    Raises:
        HfxError: lm-eval is not installed.
    """
    from hfx.models.loading import load_model
    from hfx.models.zoo import resolve_model
    from hfx.scoring import encode_pair, score_choices
    from hfx_plugins.icl.config import IclConfig
    from hfx_plugins.icl.prompts import continuation_delimiter
    from hfx_plugins.icl.tasks import classification_prompts, load_classification_task

    folder = str(resolve_model(model))
    chat = {"apply_chat_template": apply_chat_template, "fewshot_as_multiturn": fewshot_as_multiturn,
            "system_instruction": system_instruction}
    with tempfile.TemporaryDirectory() as tmp:
        out, scored = _run_lmeval(folder, Path(tmp), num_fewshot, limit, chat)
    samples = sorted(out["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    metrics = out["results"][TASK_NAME]
    net, tok = load_model(folder, "causal-lm")
    net.eval()
    task = load_classification_task(limit=limit)
    cfg = IclConfig(num_fewshot=num_fewshot, fewshot_selection="random", fewshot_random_seed=1234, **chat)
    prompts, _ = classification_prompts(tok, task, cfg, task.label_words, net)
    delimiter = continuation_delimiter(cfg.target_delimiter, apply_chat_template)
    res = score_choices(net, tok, prompts, [task.label_words] * len(prompts), task.test["label"], delimiter)
    diffs: list[float] = []
    counts = dict.fromkeys(("context_mismatches", "continuation_mismatches", "token_mismatches", "double_bos",
                            "pred_disagreements"), 0)
    example: dict[str, Any] = {}
    bos = tok.bos_token_id
    for i, sample in enumerate(samples):
        theirs = [float(r[0][0]) for r in sample["resps"]]  # one (loglik, is_greedy) per choice
        for args, word in zip(sample["arguments"], task.label_words, strict=True):
            mine = (prompts[i], f"{delimiter}{word}")
            ids = encode_pair(tok, *mine)
            example = example or {"context": mine[0], "continuation": mine[1], "context_ids": ids[0],
                                  "continuation_ids": ids[1]}
            counts["context_mismatches"] += args[0] != mine[0]
            counts["continuation_mismatches"] += args[1] != mine[1]
            counts["token_mismatches"] += scored.get((args[0], args[1])) != ids
            counts["double_bos"] += bos is not None and ids[0][:2] == [bos, bos]
        diffs += [abs(a - b) for a, b in zip(res.lls[i], theirs, strict=True)]
        their_pred = max(range(len(theirs)), key=lambda j: (theirs[j], -j))
        norm = [ll / len(c) for ll, c in zip(theirs, task.label_words, strict=True)]
        their_norm = max(range(len(norm)), key=lambda j: (norm[j], -j))
        counts["pred_disagreements"] += (their_pred != res.pred[i]) or (their_norm != res.pred_norm[i])
    return {
        "documents": len(samples), "requests": len(diffs), **counts, "max_abs_loglik_diff": max(diffs),
        "acc_hfx": res.acc, "acc_lmeval": float(metrics["acc,none"]),
        "acc_norm_hfx": res.acc_norm, "acc_norm_lmeval": float(metrics["acc_norm,none"]), "example": example,
    }


def lmeval_generation_parity(model: str, prompts: list[str], max_new_tokens: int = 8,
                             until: tuple[str, ...] = ("\n\n",)) -> dict[str, Any]:
    """Greedy generation of lm-eval's ``HFLM.generate_until`` and hfx's ``generate_answers`` on ``prompts``.

    Both on the model folder, one prompt at a time (lm-eval batch size 1, hfx ``batch_size=1``, so no
    padding); lm-eval's input ids are those its ``tok_batch_encode`` gives (the ids it passes to
    ``generate``), hfx's are recorded at the model's ``generate``.

    Returns:
        ``prompts``, ``input_mismatches`` (prompts whose input ids differ), ``double_bos`` (hfx inputs that
        start with two BOS ids), ``text_mismatches`` (generated texts that differ), ``example`` (the first
        prompt's hfx input ids and text).

    Raises:
        HfxError: lm-eval is not installed.
    """
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        raise HfxError("the lm-eval comparison needs lm-eval 0.4.13: pip install 'hfx[lmeval]'") from err
    from hfx.models.loading import load_model
    from hfx.models.zoo import resolve_model
    from hfx_plugins.icl.cot import generate_answers

    folder = str(resolve_model(model))
    lm = HFLM(pretrained=folder, dtype="float32", device="cpu", batch_size=1)
    kwargs = {"until": list(until), "max_gen_toks": max_new_tokens, "do_sample": False}
    theirs = lm.generate_until([Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)],
                               disable_tqdm=True)
    their_ids = [lm.tok_batch_encode([p])[0][0].tolist() for p in prompts]  # (T,) each: no padding
    net, tok = load_model(folder, "causal-lm")
    net.eval()
    seen: list[list[int]] = []
    inner = net.generate

    def record(*args: Any, **kw: Any) -> Any:
        seen.extend(kw["input_ids"].tolist())
        return inner(*args, **kw)

    net.generate = record  # type: ignore[method-assign]
    mine = [t[0] for t in generate_answers(net, tok, prompts, max_new_tokens, until=until, batch_size=1)]
    bos = tok.bos_token_id
    return {
        "prompts": len(prompts), "input_mismatches": sum(a != b for a, b in zip(seen, their_ids, strict=True)),
        "double_bos": sum(bos is not None and ids[:2] == [bos, bos] for ids in seen),
        "text_mismatches": sum(a != b for a, b in zip(mine, theirs, strict=True)),
        "example": {"input_ids": seen[0], "text": mine[0], "lmeval_text": theirs[0]},
    }
