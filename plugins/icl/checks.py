"""``hfx validate plugin=icl``: hfx's in-context scoring against independent and reference computations.

- Always: hfx's batched log-likelihoods against a token-by-token computation with transformers (one
  forward pass per continuation token on the bare prefix, no padding) on a tiny random Llama.
- With ``lm-eval`` installed (``pip install 'hfx[lmeval]'`` or ``tox -e lmeval``), on the bundled
  sentiment_foobar task (``parity.lmeval_parity``):
  - plain text, 8-shot, first 20 test documents, on smollm2-135m: hfx's prompts equal lm-eval's, each
    request's log-likelihood within 1e-4 of lm-eval's HF backend, acc / acc_norm identical;
  - under a chat template (``apply_chat_template``), first 8 documents, on a tiny random Llama
    (``chat_model.save_tiny_chat_model``): zero-shot, 4-shot as one user turn, 4-shot as turns with a
    system instruction (tokenizer that adds BOS, template that writes it), 4-shot as turns with
    smollm2-135m's tokenizer, and the same tiny model without the template: every request's context
    string, continuation string and token ids equal lm-eval's (else the row reads inf), log-likelihoods
    within 1e-5, acc / acc_norm identical.
  - greedy chain-of-thought generation under a chat template (2 worked exemplars as turns, 3 arithmetic_cot
    problems, 16 new tokens) on the same tiny Llama with each tokenizer: the input ids of lm-eval's
    ``HFLM.generate_until`` (one BOS) and its texts equal ``cot.generate_answers``' (else inf).
  Without lm-eval these rows read "skipped: needs lm-eval".
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
import tempfile
from typing import Any

from hfx.validate import Check, SkipCheck

__all__ = ["CHAT_RUNS", "checks"]

_REQUESTS = [("the function returns a new list", " of values"), ("a class may define its own", " methods"),
             ("return the result of the call ", "and the value")]

CHAT_RUNS: dict[str, tuple[str, int, bool, bool, bool]] = {
    # row label: (tokenizer, num_fewshot, apply_chat_template, fewshot_as_multiturn, system_instruction)
    "chat template, 0-shot": ("words", 0, True, True, False),
    "chat template, 4-shot in one user turn": ("words", 4, True, False, False),
    "chat template, 4-shot as turns + system instruction": ("words", 4, True, True, True),
    "chat template, 4-shot as turns, smollm2 tokenizer": ("smollm2", 4, True, True, False),
    "no chat template, 4-shot (same tiny model)": ("words", 4, False, True, False),
}
"""The lm-eval runs behind the chat-template rows (tiny random Llama, 8 documents each)."""


def _token_by_token() -> float:
    import torch

    from hfx.scoring import encode_pair, loglikelihood
    from hfx.testing import tiny_model

    model, tok = tiny_model("llama", seed=3)
    got = loglikelihood(model, tok, _REQUESTS, batch_size=3)
    worst = 0.0
    for (ll, _), (ctx, cont) in zip(got, _REQUESTS, strict=True):
        ctx_ids, cont_ids = encode_pair(tok, ctx, cont)
        ids, total = list(ctx_ids), 0.0
        for t in cont_ids:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()  # (V,)
            total += float(logits[t] - torch.logsumexp(logits, 0))
            ids.append(t)
        worst = max(worst, abs(ll - total))
    return worst


def _need_lmeval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise SkipCheck("needs lm-eval 0.4.13 (pip install 'hfx[lmeval]', or tox -e lmeval)")


@functools.lru_cache(maxsize=1)
def _parity() -> dict[str, Any]:
    from hfx_plugins.icl.parity import lmeval_parity

    report = lmeval_parity("smollm2-135m", num_fewshot=8, limit=20)
    report.pop("example")
    print(f"icl: lm-eval parity {report}", file=sys.stderr)
    return report


def _loglik_vs_lmeval() -> float:
    _need_lmeval()
    report = _parity()
    return math.inf if report["context_mismatches"] else report["max_abs_loglik_diff"]


def _acc_vs_lmeval() -> float:
    _need_lmeval()
    r = _parity()
    return max(abs(r["acc_hfx"] - r["acc_lmeval"]), abs(r["acc_norm_hfx"] - r["acc_norm_lmeval"]))


@functools.cache
def _chat_parity(label: str) -> dict[str, Any]:
    from hfx_plugins.icl.chat_model import SYSTEM_INSTRUCTION, save_tiny_chat_model
    from hfx_plugins.icl.parity import lmeval_parity

    tokenizer, k, chat, multiturn, system = CHAT_RUNS[label]
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_chat_model(tmp, tokenizer)
        report = lmeval_parity(str(folder), num_fewshot=k, limit=8, apply_chat_template=chat,
                               fewshot_as_multiturn=multiturn, system_instruction=SYSTEM_INSTRUCTION if system else "")
    example = report.pop("example")
    print(f"icl: lm-eval parity ({label}) {report}; first request {example['context'][-48:]!r} + "
          f"{example['continuation']!r}, ids ...{example['context_ids'][-3:]} + {example['continuation_ids']}",
          file=sys.stderr)
    return report


def _chat_requests(label: str) -> float:
    _need_lmeval()
    r = _chat_parity(label)
    differ = r["context_mismatches"] + r["continuation_mismatches"] + r["token_mismatches"] + r["double_bos"]
    return math.inf if differ else r["max_abs_loglik_diff"]


def _chat_acc() -> float:
    _need_lmeval()
    worst = 0.0
    for label in CHAT_RUNS:
        r = _chat_parity(label)
        worst = max(worst, abs(r["acc_hfx"] - r["acc_lmeval"]), abs(r["acc_norm_hfx"] - r["acc_norm_lmeval"]),
                    math.inf if r["pred_disagreements"] else 0.0)
    return worst


def _chat_generation(tokenizer: str) -> float:
    _need_lmeval()
    from transformers import AutoTokenizer

    from hfx_plugins.icl.chat_model import save_tiny_chat_model
    from hfx_plugins.icl.parity import lmeval_generation_parity
    from hfx_plugins.icl.prompts import render_prompt
    from hfx_plugins.icl.tasks import COT_TEMPLATE, load_cot_task

    task = load_cot_task(limit=3)
    shots = [COT_TEMPLATE.render(r) for r in task.exemplars.select(range(2))]
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_chat_model(tmp, tokenizer)
        tok = AutoTokenizer.from_pretrained(folder)
        prompts = [render_prompt(tok, COT_TEMPLATE.render(r)[0], shots, apply_chat_template=True) for r in task.test]
        r = lmeval_generation_parity(str(folder), prompts, max_new_tokens=16, until=("Q:", "\n\n"))
    example = r.pop("example")
    print(f"icl: lm-eval generation parity ({tokenizer} tokenizer) {r}; first input ids {example['input_ids'][:3]}..., "
          f"text {example['text']!r}", file=sys.stderr)
    return math.inf if r["input_mismatches"] or r["text_mismatches"] or r["double_bos"] else 0.0


def checks() -> list[Check]:
    """The token-by-token check, and the lm-eval checks (skipped with the reason when lm-eval is absent)."""
    out = [
        Check("log-likelihoods vs token-by-token forward passes (tiny Llama)", "transformers", 1e-4, _token_by_token),
        Check("per-request log-likelihood vs lm-eval HF backend (smollm2-135m, sentiment_foobar 8-shot, 20 docs; "
              "inf if a prompt differs)", "lm-eval", 1e-4, _loglik_vs_lmeval),
        Check("acc and acc_norm vs lm-eval (same run)", "lm-eval", 0.0, _acc_vs_lmeval),
    ]
    for label in CHAT_RUNS:
        out.append(Check(f"{label}: requests and log-likelihoods vs lm-eval (tiny Llama, 8 docs; inf if a context, "
                         "continuation or token id differs)", "lm-eval", 1e-5,
                         functools.partial(_chat_requests, label)))
    out.append(Check("acc and acc_norm vs lm-eval, every chat-template run above (inf if a prediction differs)",
                     "lm-eval", 0.0, _chat_acc))
    for tokenizer in ("words", "smollm2"):
        out.append(Check(f"chat template, chain-of-thought greedy generation vs lm-eval generate_until (tiny Llama, "
                         f"{tokenizer} tokenizer, 3 problems; inf if an input id or a text differs)", "lm-eval", 0.0,
                         functools.partial(_chat_generation, tokenizer)))
    return out
