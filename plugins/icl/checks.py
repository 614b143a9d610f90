"""``hfx validate plugin=icl``: hfx's in-context scoring against independent and reference computations.

- Always: hfx's batched log-likelihoods against a token-by-token computation with transformers (one
  forward pass per continuation token on the bare prefix, no padding) on a tiny random Llama.
- With ``lm-eval`` installed (``pip install lm-eval`` or ``tox -e lmeval``): the bundled sentiment_foobar
  task, 8-shot, first 20 test documents, on smollm2-135m: hfx's prompts equal lm-eval's, each request's
  log-likelihood within 1e-4 of lm-eval's HF backend, and acc / acc_norm identical. Without it those two
  checks are left out and a line says "skipped: needs lm-eval".
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys

from hfx.validate import Check

__all__ = ["checks"]

_REQUESTS = [("the function returns a new list", " of values"), ("a class may define its own", " methods"),
             ("return the result of the call ", "and the value")]


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


@functools.lru_cache(maxsize=1)
def _parity() -> dict[str, float]:
    from hfx_plugins.icl.parity import lmeval_parity

    report = lmeval_parity("smollm2-135m", num_fewshot=8, limit=20)
    print(f"icl: lm-eval parity {report}", file=sys.stderr)
    return report


def _loglik_vs_lmeval() -> float:
    report = _parity()
    return math.inf if report["context_mismatches"] else report["max_abs_loglik_diff"]


def _acc_vs_lmeval() -> float:
    r = _parity()
    return max(abs(r["acc_hfx"] - r["acc_lmeval"]), abs(r["acc_norm_hfx"] - r["acc_norm_lmeval"]))


def checks() -> list[Check]:
    """The token-by-token check, plus the two lm-eval checks when lm-eval is installed."""
    out = [Check("log-likelihoods vs token-by-token forward passes (tiny Llama)", "transformers", 1e-4,
                 _token_by_token)]
    if importlib.util.find_spec("lm_eval") is None:
        print("icl: lm-eval checks skipped: needs lm-eval (pip install lm-eval, or tox -e lmeval)", file=sys.stderr)
        return out
    out += [
        Check("per-request log-likelihood vs lm-eval HF backend (smollm2-135m, sentiment_foobar 8-shot, 20 docs; "
              "inf if a prompt differs)", "lm-eval", 1e-4, _loglik_vs_lmeval),
        Check("acc and acc_norm vs lm-eval (same run)", "lm-eval", 0.0, _acc_vs_lmeval),
    ]
    return out
