"""icl prompts, example selection, answer extraction and self-consistency (no model, or a tiny one).

Expected values: lm-eval 0.4.13's plain-text few-shot layout (``build_qa_turn``: input + " " + answer +
"\\n\\n" per example, then the query input) and its default sampler (one ``random.Random(1234)`` shared by
the queries, ``rnd.sample(pool, k)`` each, re-implemented here on the pool rows themselves); the gsm8k-cot
strict/flexible regexes; ``Counter.most_common`` majority voting.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.icl import (
    IclConfig,
    build_prompt,
    extract_answer,
    fit_prompt,
    generate_answers,
    select_examples,
    self_consistency,
)
from hfx_plugins.icl.cot import INVALID

POOL = [f"sentence number {i}" for i in range(30)]
LABELS = [i % 3 for i in range(30)]


def test_build_prompt_layout() -> None:
    got = build_prompt("Q: c\nA:", [("Q: a\nA:", "1"), ("Q: b\nA:", "2")])
    assert got == "Q: a\nA: 1\n\nQ: b\nA: 2\n\nQ: c\nA:"
    assert build_prompt("x", [], description="Task.\n\n") == "Task.\n\nx"


def test_random_selection_is_lm_evals_sampler() -> None:
    rnd = random.Random(1234)  # lm-eval: ContextSampler(rnd=1234), advancing over the queries in order
    want = [[POOL.index(doc) for doc in rnd.sample(POOL, 4)] for _ in range(5)]
    assert select_examples(POOL, ["q"] * 5, 4, "random", seed=1234) == want
    assert select_examples(POOL, ["q"] * 2, 3, "first_n") == [[0, 1, 2], [0, 1, 2]]


def test_balanced_selection_has_equal_label_counts() -> None:
    for chosen in select_examples(POOL, ["q"] * 4, 6, "balanced", labels=LABELS):
        assert sorted(np.bincount([LABELS[i] for i in chosen]).tolist()) == [2, 2, 2]
        assert len(set(chosen)) == 6


def test_knn_puts_nearest_last() -> None:
    vectors = {"a": [1.0, 0.0], "b": [0.9, 0.1], "c": [0.0, 1.0], "d": [0.7, 0.7], "query": [1.0, 0.05]}
    embed = lambda texts: np.array([vectors[t] for t in texts])  # noqa: E731
    assert select_examples(["a", "b", "c", "d"], ["query"], 3, "knn", embedder=embed) == [[3, 1, 0]]


def test_k_larger_than_pool_is_a_clear_error() -> None:
    with pytest.raises(HfxError, match="k=31 examples asked for but the pool holds only 30"):
        select_examples(POOL, ["q"], 31)
    with pytest.raises(HfxError, match=r"needs 3 rows per label, but label\(s\) \{1: 2\} have fewer"):
        select_examples(POOL[:12], ["q"], 6, "balanced", labels=[0] * 10 + [1] * 2)
    with pytest.raises(HfxError, match="fewshot_selection must be one of"):
        IclConfig(fewshot_selection="nearest")
    with pytest.raises(HfxError, match="needs a group"):
        IclConfig(answer_pattern="The answer is")


def test_fit_prompt_drops_examples_never_the_query() -> None:
    _, tok = tiny_model("llama")
    shots = [("the function returns", "a value"), ("a class may define", "methods"), ("the module", "is")]
    full, dropped = fit_prompt(tok, "the value of the", shots, max_length=100)
    assert dropped == 0 and full == build_prompt("the value of the", shots)
    limit = len(tok.encode(build_prompt("the value of the", shots[1:]))) + 2  # room for the last two only
    with pytest.warns(UserWarning, match="dropped 1 of 3 examples"):
        prompt, dropped = fit_prompt(tok, "the value of the", shots, max_length=limit, reserve=2)
    assert dropped == 1 and prompt == build_prompt("the value of the", shots[1:])  # the farthest one went
    with pytest.raises(HfxError, match="query is never truncated"):
        fit_prompt(tok, "the value of the function of the class", shots, max_length=5)


@pytest.mark.parametrize(("text", "want"), [
    ("3 + 4 = 7. The answer is 7.", ("7", "pattern")),
    ("The answer is 1,200.", ("1200", "pattern")),
    ("so 12 - 5 = 7 apples left", ("7", "fallback")),  # no "The answer is": last number
    ("I do not know.", (INVALID, "invalid")),
])
def test_extract_answer(text: str, want: tuple[str, str]) -> None:
    assert extract_answer(text) == want


def test_extract_answer_without_fallback_counts_invalid() -> None:
    assert extract_answer("so 7 apples", fallback=False) == (INVALID, "invalid")


def test_self_consistency_majority() -> None:
    assert self_consistency(["7", "8", "7", INVALID]) == "7"
    assert self_consistency(["8", "7"]) == "8"  # a tie goes to the first seen (Counter.most_common)
    assert self_consistency([INVALID, INVALID, "3"]) == INVALID  # invalid chains vote, as in lm-eval


def test_generate_answers_greedy_equals_argmax_decoding() -> None:
    import torch

    model, tok = tiny_model("llama", seed=1)
    prompt = "the function returns"
    got = generate_answers(model, tok, [prompt, "a class"], max_new_tokens=5, until=())
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    for _ in range(5):  # greedy decoding by hand: append the argmax of the last position's logits
        with torch.no_grad():
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    want = tok.decode(ids[0, -5:], skip_special_tokens=True)
    assert got[0] == [want]
    sampled = generate_answers(model, tok, [prompt], max_new_tokens=4, until=(), do_sample=True,
                               num_return_sequences=3, seed=7)
    assert len(sampled[0]) == 3
    assert sampled == generate_answers(model, tok, [prompt], max_new_tokens=4, until=(), do_sample=True,
                                       num_return_sequences=3, seed=7)  # seeded


def test_shared_prefix_decoding_equals_generate() -> None:
    """The exemplars' KV cache computed once, then each query decoded alone: the same greedy text as generate()."""
    model, tok = tiny_model("llama", seed=1)
    shots = build_prompt("", [("the function returns", "a value"), ("a class may define", "methods")])
    prompts = [shots + "the value of the", shots + "the module is"]
    plain = generate_answers(model, tok, prompts, max_new_tokens=6, until=())
    shared = generate_answers(model, tok, prompts, max_new_tokens=6, until=(), shared_prefix_delimiter="\n\n")
    assert shared == plain
    votes = generate_answers(model, tok, prompts, max_new_tokens=3, until=(), do_sample=True, num_return_sequences=3,
                             shared_prefix_delimiter="\n\n")
    assert [len(v) for v in votes] == [3, 3]
