"""The bundled chain-of-thought problems: every worked step is right, and every rationale ends in its answer."""

from __future__ import annotations

import re

import pytest

from hfx.data import load_bundled
from hfx.errors import HfxError

STEP = re.compile(r"(\d+(?: [-+*/] \d+)+) = (\d+)")  # "a op b [op c] = d", evaluated left to right as Python does


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    data = load_bundled("arithmetic_cot")
    return [*data["train"], *data["test"]]


def test_at_least_50_test_problems_with_24_written_by_hand() -> None:
    test = load_bundled("arithmetic_cot")["test"]
    assert len(test) >= 50
    assert test["template"].count("handwritten") == 24
    assert len(set(test["question"])) == len(test)  # no problem twice


def test_every_step_of_every_rationale_is_right(rows: list[dict]) -> None:
    for row in rows:
        steps = STEP.findall(row["rationale"])
        assert len(steps) >= 2 or row["template"] != "handwritten", row["question"]  # multi-step
        for expr, result in steps:
            value = eval(expr)  # noqa: S307 (digits and + - * / only, by the regex)
            assert value == int(value) and int(value) == int(result), (row["question"], expr, result)


def test_rationale_ends_with_the_answer(rows: list[dict]) -> None:
    for row in rows:
        assert row["rationale"].endswith(f"The answer is {row['answer']}."), row["question"]
        last = STEP.findall(row["rationale"])[-1][1]
        assert last == row["answer"], row["question"]  # the last step computes the answer


def test_vote_sizes_score_the_first_m_chains_of_one_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """maj@m is the majority of the first m chains; misses and invalid are counted on those m chains."""
    from hfx.testing import tiny_model
    from hfx_plugins.icl import tasks
    from hfx_plugins.icl.config import IclConfig

    model, tok = tiny_model("llama", seed=1)
    task = tasks.load_cot_task(limit=2)
    gold = [str(a) for a in task.test["answer"]]
    chains = [  # problem 0: the first chain right, then two wrong that agree; problem 1: right from chain 2 on
        [f"So. The answer is {gold[0]}.", "The answer is 999.", "The answer is 999.", "no number here"],
        ["The answer is 998.", f"{gold[1]}", f"The answer is {gold[1]}.", f"The answer is {gold[1]}."],
    ]
    asked = {}

    def fake_generate(model, tokenizer, prompts, *args, num_return_sequences=1, **kwargs):  # type: ignore[no-untyped-def]
        asked["n"] = num_return_sequences
        return [c[:num_return_sequences] for c in chains]

    monkeypatch.setattr(tasks, "generate_answers", fake_generate)
    res = tasks.evaluate_cot(model, tok, task, IclConfig(num_fewshot=0, repeats=2, max_new_tokens=8), "cot", self_consistency_vote=True,
                             vote_sizes=[1, 4])
    assert asked["n"] == 4  # one sampling of the largest size
    votes = res["votes"]
    assert sorted(votes) == [1, 2, 4]
    assert [votes[m]["correct"] for m in (1, 2, 4)] == [1, 1, 1]  # p0: right, tie (first seen), 999; p1: wrong, wrong... right
    assert votes[4]["pattern_misses"] == 2 and votes[4]["invalid"] == 1 and votes[4]["chains"] == 8
    assert res["accuracy"] == votes[2]["accuracy"] == 0.5 and res["chains"] == 4  # the row itself: icl.repeats = 2
    with pytest.raises(HfxError, match="vote sizes"):
        tasks.evaluate_cot(model, tok, task, IclConfig(num_fewshot=0, max_new_tokens=8), "cot",
                           self_consistency_vote=True, vote_sizes=[0])
