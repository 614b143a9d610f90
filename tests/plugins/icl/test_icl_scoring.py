"""icl scoring against independent computations on a tiny random Llama (hfx.testing; seconds, no download).

Expected numbers come from: a token-by-token forward pass written here (log p(token | prefix) read off the
logits of the prefix alone, summed by hand); lm-eval 0.4.13's ``_encode_pair`` rule (trailing context spaces
move into the continuation; the split is taken from the whole string's tokens); and lm-eval's ``acc`` /
``acc_norm`` definitions (argmax of ll, of ll / len(choice) in characters) applied to hand-picked numbers.
"""

from __future__ import annotations

import math

import pytest
import torch

from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.icl import encode_pair, loglikelihood, score_choices

REQUESTS = [
    ("the function returns a new list", " of values"),
    ("a class may define its own", " methods"),
    ("the value of the", " attribute is"),
    ("the module", " is imported"),
    ("return the result of the call ", "and the value"),  # trailing space moves into the continuation
]


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", seed=3)


def _by_hand(model, tok, context: str, continuation: str) -> tuple[float, bool]:
    """Sum of log p(token_i | all tokens before it), one forward pass per continuation token, no padding."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tok.encode(context + continuation)
    n_ctx = len(tok.encode(context))
    total, greedy = 0.0, True
    for pos in range(n_ctx, len(whole)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([whole[:pos]])).logits[0, -1].double()  # (V,)
        logp = logits - torch.logsumexp(logits, 0)
        total += float(logp[whole[pos]])
        greedy &= int(logits.argmax()) == whole[pos]
    return total, greedy


def test_loglikelihood_matches_token_by_token(llama) -> None:
    model, tok = llama
    got = loglikelihood(model, tok, REQUESTS, batch_size=3)  # batched, right-padded, sorted by length
    for (ll, greedy), (ctx, cont) in zip(got, REQUESTS, strict=True):
        want, want_greedy = _by_hand(model, tok, ctx, cont)
        assert ll == pytest.approx(want, abs=1e-4)
        assert greedy == want_greedy
    assert all(ll < 0 for ll, _ in got)


def test_encode_pair_moves_trailing_spaces(llama) -> None:
    _, tok = llama
    ctx, cont = encode_pair(tok, "the value of the ", "function")
    assert ctx == tok.encode("the value of the")
    assert ctx + cont == tok.encode("the value of the function")
    assert tok.decode(cont).strip() == "function"


def test_acc_and_acc_norm_follow_lm_eval_definitions(llama, monkeypatch) -> None:
    model, tok = llama
    # choice "a" (1 char) ll -2; choice "bbbb" (4 chars) ll -3: acc picks "a", acc_norm picks "bbbb" (-0.75 > -2)
    fake = {" a": -2.0, " bbbb": -3.0, " x": -1.0, " yy": -1.0}
    monkeypatch.setattr("hfx.scoring.loglikelihood",
                        lambda m, t, reqs, *a, **k: [(fake[c], False) for _, c in reqs])
    res = score_choices(model, tok, ["q1", "q2"], [["a", "bbbb"], ["x", "yy"]], golds=[1, 0])
    assert res.pred == [0, 0] and res.pred_norm == [1, 1]  # a tie (x, yy on acc) goes to the first choice
    assert (res.acc, res.acc_norm) == (0.5, 0.5)


def test_score_choices_sums_to_probabilities(llama) -> None:
    model, tok = llama
    res = score_choices(model, tok, ["the function returns"], [["a", "the"]], golds=[0])
    probs = [math.exp(ll) for ll in res.lls[0]]
    assert all(0 < p < 1 for p in probs)
    want = [_by_hand(model, tok, "the function returns", f" {c}")[0] for c in ("a", "the")]
    assert res.lls[0] == pytest.approx(want, abs=1e-4)


def test_request_longer_than_context_is_cut_from_the_left(llama) -> None:
    """lm-eval 0.4.13 ``lm_eval/models/huggingface.py`` ``HFLM._loglikelihood_tokens``: the input is
    ``(context + continuation)[-(max_length + 1):][:-1]``; a continuation longer than max_length is refused."""
    model, tok = llama
    with pytest.warns(UserWarning, match="left truncation"):
        ((ll, _),) = loglikelihood(model, tok, [("the function returns a new list", " of values")], max_length=4)
    ctx, cont = encode_pair(tok, "the function returns a new list", " of values")
    kept = (ctx + cont)[-5:]  # max_length + 1 tokens, the last one is only a target
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([kept[:-1]])).logits[0].double().log_softmax(-1)  # (4, V)
    want = sum(float(logp[len(kept) - 1 - len(cont) + j, t]) for j, t in enumerate(cont))
    assert ll == pytest.approx(want, abs=1e-4)
    with pytest.raises(HfxError, match="more than the limit of 1"):
        loglikelihood(model, tok, [("the function", " returns a new list")], max_length=1)
