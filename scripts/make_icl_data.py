"""Write the in-context-learning sets: ``sentiment_foobar`` and ``arithmetic_cot`` (deterministic).

    python scripts/make_icl_data.py     # writes hfx/data/bundled/{sentiment_foobar,arithmetic_cot}/*.jsonl

``sentiment_foobar`` is the bundled ``sentiment`` set (VADER words in neutral sentences) with its labels
renamed to words a language model has no prior for: negative -> "foo", positive -> "bar". Zero-shot, a
model can only guess; the few-shot examples carry the whole mapping. Train: all 1200 rows of
``sentiment/train.jsonl`` in their order. Test: the first 50 negative and the first 50 positive rows of
``sentiment/test.jsonl``, kept in file order (classes interleaved), so a full evaluation is 200 requests.

``arithmetic_cot`` holds multi-step arithmetic word problems written here from 8 templates with numbers
drawn by ``random.Random(1234)``: two or three operations (+, -, x, /) on small whole numbers, every
intermediate and final answer a whole number >= 0. Train: 8 worked exemplars, one per template, whose
rationale ends "The answer is N." (the style of Wei et al. 2022, https://arxiv.org/abs/2201.11903, and of
lm-evaluation-harness's gsm8k-cot). Test: 40 problems, none equal to an exemplar, then the 24
hand-written problems of ``icl_cot_problems.py`` (template "handwritten").
Rows: {"question", "rationale", "answer", "template"}.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from icl_cot_problems import HANDWRITTEN  # scripts/icl_cot_problems.py (python puts scripts/ on the path)

BUNDLED = Path(__file__).resolve().parents[1] / "hfx" / "data" / "bundled"
SEED = 1234
LABEL_WORDS = ("foo", "bar")  # label 0 (negative), label 1 (positive)
N_TEST_PER_CLASS = 50
N_PROBLEMS = 40
NAMES = [("Tom", "he"), ("Anna", "she"), ("Ben", "he"), ("Maria", "she"), ("Sam", "he"), ("Lucy", "she"),
         ("Omar", "he"), ("Nina", "she"), ("Leo", "he"), ("Emma", "she")]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cards", "shells", "stamps"]

Problem = tuple[str, str, int]  # question, rationale, answer


def _gain_loss(r: random.Random) -> Problem:
    name, he = r.choice(NAMES)
    item, a, b = r.choice(ITEMS), r.randint(3, 20), r.randint(2, 15)
    c = r.randint(1, a + b - 1)
    s = a + b
    q = f"{name} has {a} {item}. {he.capitalize()} gets {b} more and then gives away {c}. How many {item} does {name} have now?"
    why = (f"{name} starts with {a} {item}. After getting {b} more, {he} has {a} + {b} = {s}. "
           f"After giving away {c}, {he} has {s} - {c} = {s - c}.")
    return q, why, s - c


def _change(r: random.Random) -> Problem:
    name, _ = r.choice(NAMES)
    n, p = r.randint(2, 6), r.randint(2, 9)
    bill = next(b for b in (10, 20, 50, 100) if b > n * p)
    q = (f"A pen costs {p} dollars. {name} buys {n} pens and pays with a {bill}-dollar bill. "
         f"How many dollars of change does {name} get?")
    why = f"{n} pens cost {n} * {p} = {n * p} dollars. The change is {bill} - {n * p} = {bill - n * p} dollars."
    return q, why, bill - n * p


def _chairs(r: random.Random) -> Problem:
    rows, per = r.randint(2, 9), r.randint(3, 10)
    taken = r.randint(1, rows * per - 1)
    q = f"A room has {rows} rows of chairs with {per} chairs in each row. {taken} chairs are taken. How many chairs are free?"
    why = f"There are {rows} * {per} = {rows * per} chairs. {rows * per} - {taken} = {rows * per - taken} are free."
    return q, why, rows * per - taken


def _twice(r: random.Random) -> Problem:
    name, he = r.choice(NAMES)
    a = r.randint(3, 30)
    q = f"{name} reads {a} pages on Monday and twice as many pages on Tuesday. How many pages does {he} read in the two days?"
    why = f"On Tuesday {he} reads 2 * {a} = {2 * a} pages. In the two days {he} reads {a} + {2 * a} = {3 * a} pages."
    return q, why, 3 * a


def _share(r: random.Random) -> Problem:
    n, each = r.randint(2, 6), r.randint(3, 9)
    eat = r.randint(1, each - 1)
    q = (f"{n} friends share {n * each} cookies equally. Each friend eats {eat} of their cookies. "
         f"How many cookies does each friend have left?")
    why = f"Each friend gets {n * each} / {n} = {each} cookies. After eating {eat}, each has {each} - {eat} = {each - eat}."
    return q, why, each - eat


def _bus(r: random.Random) -> Problem:
    a, b, c = r.randint(10, 40), r.randint(1, 9), r.randint(1, 12)
    d = r.randint(1, a - b + c - 1)
    s = a - b + c
    q = (f"A bus has {a} passengers. At the first stop {b} get off and {c} get on. At the second stop {d} get off. "
         f"How many passengers are on the bus now?")
    why = (f"After the first stop there are {a} - {b} + {c} = {s} passengers. "
           f"After the second stop there are {s} - {d} = {s - d}.")
    return q, why, s - d


def _savings(r: random.Random) -> Problem:
    name, he = r.choice(NAMES)
    a, w = r.randint(2, 10), r.randint(2, 8)
    spend = r.randint(2, a * w - 1)
    q = f"{name} saves {a} dollars a week for {w} weeks and then spends {spend} dollars on a game. How many dollars does {he} have left?"
    why = f"{he.capitalize()} saves {a} * {w} = {a * w} dollars. After the game {he} has {a * w} - {spend} = {a * w - spend} dollars."
    return q, why, a * w - spend


def _boxes(r: random.Random) -> Problem:
    boxes, per, extra = r.randint(2, 8), r.randint(2, 12), r.randint(1, 15)
    item = r.choice(ITEMS)
    q = f"There are {boxes} boxes with {per} {item} in each box, and {extra} more {item} on the table. How many {item} are there in all?"
    why = f"The boxes hold {boxes} * {per} = {boxes * per} {item}. With the table, {boxes * per} + {extra} = {boxes * per + extra}."
    return q, why, boxes * per + extra


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "gain_loss": _gain_loss, "change": _change, "chairs": _chairs, "twice": _twice,
    "share": _share, "bus": _bus, "savings": _savings, "boxes": _boxes,
}


def _row(template: str, problem: Problem) -> dict:
    q, why, ans = problem
    assert ans >= 0
    return {"question": q, "rationale": f"{why} The answer is {ans}.", "answer": str(ans), "template": template}


def arithmetic() -> dict[str, list[dict]]:
    """8 exemplars (one per template, in template order) and N_PROBLEMS test problems (templates drawn at random)."""
    r = random.Random(SEED)
    train = [_row(name, make(r)) for name, make in TEMPLATES.items()]
    seen = {row["question"] for row in train}
    test: list[dict] = []
    while len(test) < N_PROBLEMS:
        name = r.choice(list(TEMPLATES))
        row = _row(name, TEMPLATES[name](r))
        if row["question"] not in seen:
            seen.add(row["question"])
            test.append(row)
    test += [_row("handwritten", p) for p in HANDWRITTEN]  # after the template ones: their rows keep their order
    return {"train": train, "test": test}


def _relabel(row: dict) -> dict:
    return {"text": row["text"], "label": row["label"], "label_text": LABEL_WORDS[row["label"]], "word": row["word"]}


def sentiment_foobar() -> dict[str, list[dict]]:
    """The sentiment rows with label words foo/bar; a balanced 100-row test subset in file order."""
    read = lambda split: [json.loads(line) for line in (BUNDLED / "sentiment" / f"{split}.jsonl").open()]  # noqa: E731
    test_rows, count = [], [0, 0]
    for row in read("test"):
        if count[row["label"]] < N_TEST_PER_CLASS:
            count[row["label"]] += 1
            test_rows.append(row)
    return {"train": [_relabel(r) for r in read("train")], "test": [_relabel(r) for r in test_rows]}


def main() -> None:
    for name, splits in (("sentiment_foobar", sentiment_foobar()), ("arithmetic_cot", arithmetic())):
        out = BUNDLED / name
        out.mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"{name}/{split}: {len(rows)} rows -> {out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
