"""hfx_plugins.prompt_learning's label-word task (the prefix_tuning and prompt_tuning recipes).

Expected values: lm-evaluation-harness's split of context and continuation (trailing spaces move to the
continuation) and its summed log-likelihood, recomputed here by hand from the model's log-softmax; for a
prompt over the length limit, lm-eval 0.4.13's left truncation (``lm_eval/models/huggingface.py``,
``HFLM._loglikelihood_tokens``: the model reads ``(context + word)[-(max_length + 1):][:-1]``)."""

from __future__ import annotations

import pytest
import torch

from hfx.data.collate import IGNORE_INDEX
from hfx.scoring import encode_pair
from hfx.testing import tiny_model
from hfx_plugins.prompt_learning import encode_rows, label_word_scores

PROMPTS = ["Sentiment: the value is true", "Sentiment: a list of false names"]


def test_rows_put_the_loss_on_the_label_word_only() -> None:
    _, tok = tiny_model("llama")
    (row,) = encode_rows(tok, ["value: a list"], [" true"], max_length=4)
    assert row["input_ids"][-1] == tok.convert_tokens_to_ids("true")
    assert row["labels"] == [IGNORE_INDEX] * 3 + [tok.convert_tokens_to_ids("true")]  # prompt cut from the left to 4 tokens
    assert encode_pair(tok, "a list ", "true") == encode_pair(tok, "a list", " true")


def test_scores_are_summed_log_likelihoods_and_the_one_token_path_agrees() -> None:
    model, tok = tiny_model("llama")
    fast = label_word_scores(model, tok, PROMPTS, [" true", " false"])  # one token each: one pass per prompt
    general = label_word_scores(model, tok, PROMPTS, [" true", " false", " none of"])  # a 2-token word: every pair
    assert torch.allclose(fast, general[:, :2], atol=1e-5)
    ids = tok(PROMPTS[1] + " none of", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = model(ids).logits[0].log_softmax(-1)  # (T, V)
    by_hand = logp[-3, ids[0, -2]] + logp[-2, ids[0, -1]]
    assert abs(general[1, 2].item() - by_hand.item()) <= 1e-5


def test_long_prompts_are_cut_as_lm_eval_cuts_them() -> None:
    """Before hfx.scoring, a multi-token word's prompt was cut to max_length tokens in all (one more than
    lm-eval) and a one-token word's to max_length tokens before the word: the two paths disagreed."""
    model, tok = tiny_model("llama")
    words = [" true", " none of"]
    with pytest.warns(UserWarning, match="left truncation"):
        got = label_word_scores(model, tok, PROMPTS, words, max_length=4)  # (2, 2)
    for i, prompt in enumerate(PROMPTS):
        for j, word in enumerate(words):
            ctx, cont = encode_pair(tok, prompt, word)
            kept = (ctx + cont)[-5:]  # max_length + 1 tokens; the last is a target only
            with torch.no_grad():
                logp = model(torch.tensor([kept[:-1]])).logits[0].log_softmax(-1)  # (4, V)
            want = sum(logp[len(kept) - 1 - len(cont) + k, t] for k, t in enumerate(cont))
            assert abs(got[i, j].item() - float(want)) <= 1e-5
