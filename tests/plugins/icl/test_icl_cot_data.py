"""The bundled chain-of-thought problems: every worked step is right, and every rationale ends in its answer."""

from __future__ import annotations

import re

import pytest

from hfx.data import load_bundled

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
