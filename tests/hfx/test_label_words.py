"""hfx.runner.label_words: the label-word task of the prompt-learning recipes.

Expected values: lm-evaluation-harness's split of context and continuation (trailing spaces move to the
continuation) and its summed log-likelihood, recomputed here by hand from the model's log-softmax."""

from __future__ import annotations

import torch

from hfx.runner.label_words import encode_pair, encode_rows, label_word_scores
from hfx.testing import tiny_model

PROMPTS = ["Sentiment: the value is true", "Sentiment: a list of false names"]


def test_rows_put_the_loss_on_the_label_word_only() -> None:
    _, tok = tiny_model("llama")
    (row,) = encode_rows(tok, ["value: a list"], [" true"], max_length=4)
    assert row["input_ids"][-1] == tok.convert_tokens_to_ids("true")
    assert row["labels"] == [-100] * 3 + [tok.convert_tokens_to_ids("true")]  # prompt cut from the left to 4 tokens
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
