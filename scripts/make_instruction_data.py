"""Write hfx/data/bundled/instructions/{train,test}.jsonl: short instructions with one checkable answer each.

Deterministic (a fixed seed, no network): rerunning it rewrites identical files. Every answer is computed
(arithmetic, string operations, Python expressions evaluated here, counting, sorting) or read from a small
hand-written table of well-known facts (capitals, antonyms, plurals). The test split holds out whole items:
countries, word pairs, plurals and words that never appear in train.

    python scripts/make_instruction_data.py
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "hfx" / "data" / "bundled" / "instructions"
SEED = 1234

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Austria": "Vienna", "Switzerland": "Bern",
    "Poland": "Warsaw", "the Czech Republic": "Prague", "Hungary": "Budapest", "Greece": "Athens",
    "Sweden": "Stockholm", "Norway": "Oslo", "Denmark": "Copenhagen", "Finland": "Helsinki", "Ireland": "Dublin",
    "Iceland": "Reykjavik", "Russia": "Moscow", "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade",
    "Croatia": "Zagreb", "Turkey": "Ankara", "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja",
    "Ethiopia": "Addis Ababa", "Morocco": "Rabat", "Ghana": "Accra", "Japan": "Tokyo", "China": "Beijing",
    "India": "New Delhi", "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "Malaysia": "Kuala Lumpur", "Pakistan": "Islamabad", "Iran": "Tehran",
    "Iraq": "Baghdad", "Saudi Arabia": "Riyadh", "Afghanistan": "Kabul", "Nepal": "Kathmandu",
    "Bangladesh": "Dhaka", "Australia": "Canberra", "New Zealand": "Wellington", "Canada": "Ottawa",
    "Mexico": "Mexico City", "Argentina": "Buenos Aires", "Chile": "Santiago", "Peru": "Lima",
    "Venezuela": "Caracas", "Cuba": "Havana", "Jamaica": "Kingston", "Estonia": "Tallinn", "Latvia": "Riga",
    "Lithuania": "Vilnius", "Slovakia": "Bratislava", "Slovenia": "Ljubljana", "Algeria": "Algiers",
    "Tunisia": "Tunis", "Senegal": "Dakar", "Uganda": "Kampala", "Zimbabwe": "Harare", "Mongolia": "Ulaanbaatar",
    "Qatar": "Doha", "Jordan": "Amman", "Lebanon": "Beirut", "Syria": "Damascus", "Uruguay": "Montevideo",
    "Ecuador": "Quito", "Colombia": "Bogota", "Brazil": "Brasilia", "the United Kingdom": "London",
    "Scotland": "Edinburgh", "Wales": "Cardiff",
}
ANTONYMS = {
    "hot": "cold", "big": "small", "fast": "slow", "up": "down", "open": "closed", "happy": "sad", "early": "late",
    "empty": "full", "strong": "weak", "rich": "poor", "young": "old", "high": "low", "hard": "soft", "wet": "dry",
    "loud": "quiet", "long": "short", "thick": "thin", "heavy": "light", "push": "pull", "win": "lose",
    "buy": "sell", "begin": "end", "true": "false", "inside": "outside", "above": "below", "before": "after",
    "always": "never", "first": "last", "left": "right", "north": "south", "east": "west", "day": "night",
    "love": "hate", "accept": "reject", "increase": "decrease", "maximum": "minimum", "positive": "negative",
    "ancient": "modern", "asleep": "awake", "clean": "dirty", "cheap": "expensive", "deep": "shallow",
    "easy": "difficult", "wide": "narrow", "friend": "enemy", "give": "take", "import": "export",
    "input": "output", "sweet": "sour", "smooth": "rough", "question": "answer", "victory": "defeat",
    "visible": "invisible", "wise": "foolish", "arrive": "depart", "dark": "bright", "laugh": "cry",
    "remember": "forget", "safe": "dangerous", "start": "finish", "upper": "lower",
}
PLURALS = {
    "child": "children", "mouse": "mice", "man": "men", "woman": "women", "tooth": "teeth", "foot": "feet",
    "goose": "geese", "person": "people", "ox": "oxen", "leaf": "leaves", "knife": "knives", "wife": "wives",
    "life": "lives", "wolf": "wolves", "half": "halves", "box": "boxes", "bus": "buses", "city": "cities",
    "baby": "babies", "story": "stories", "church": "churches", "watch": "watches", "dish": "dishes",
    "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes", "cactus": "cacti", "fungus": "fungi",
    "crisis": "crises", "analysis": "analyses", "thesis": "theses", "phenomenon": "phenomena",
    "criterion": "criteria", "sheep": "sheep", "deer": "deer", "series": "series", "key": "keys", "day": "days",
    "toy": "toys", "cat": "cats", "book": "books", "tree": "trees", "class": "classes", "glass": "glasses",
    "fox": "foxes", "louse": "lice", "calf": "calves", "loaf": "loaves", "shelf": "shelves", "thief": "thieves",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def held_out(item: str, share: float = 0.25) -> bool:
    """A stable choice of test items: the first bytes of the item's sha256."""
    return int(hashlib.sha256(item.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def words() -> list[str]:
    """Common lower-case words (4-9 letters) of Python's own reference manual, pydoc_data.topics."""
    from pydoc_data.topics import topics

    counts = Counter(re.findall(r"\b[a-z]{4,9}\b", " ".join(topics[k] for k in sorted(topics))))
    return sorted(w for w, _ in counts.most_common(500))


def table_task(table: dict[str, str], templates: list[str], task: str) -> Callable[[random.Random, bool], list]:
    def make(rng: random.Random, test: bool) -> list[tuple[str, str, str]]:
        rows = []
        for key, value in table.items():
            if held_out(key) != test:
                continue
            for template in (rng.sample(templates, 1) if test else templates):
                rows.append((template.format(key), value, task))
        return rows
    return make


def python_expression(rng: random.Random, word: str) -> str:
    a, b, c = rng.sample(range(1, 40), 3)
    return rng.choice([
        f'len("{word}")', f'"{word}".upper()', f"sorted([{a}, {b}, {c}])", f"max([{a}, {b}, {c}])",
        f"min([{a}, {b}, {c}])", f"sum([{a}, {b}, {c}])", f'"{word}"[0]', f'"{word}"[::-1]', f"{a} // {b % 7 + 2}",
        f"{a} % {b % 7 + 2}", f"2 ** {a % 9}", f"list(range({a % 6 + 1}))", f'"{word}".count("e")',
        f"abs({-a})", f'"{word}".capitalize()', f'"{word}" + "s"', f"len([{a}, {b}, {c}])", f"{a} * {b % 9 + 1}",
    ])


def generated(rng: random.Random, pool: list[str], n: int) -> list[tuple[str, str, str]]:
    rows = []
    for _ in range(n):
        w = rng.choice(pool)
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        nums = rng.sample(range(1, 100), rng.randint(3, 5))
        step, start = rng.randint(2, 9), rng.randint(1, 30)
        expr = python_expression(rng, w)
        kind = rng.randrange(12)
        rows.append([
            (f"What is {a} + {b}?", str(a + b), "arithmetic"),
            (f"What is {max(a, b)} - {min(a, b)}?", str(max(a, b) - min(a, b)), "arithmetic"),
            (f"What is {a % 12 + 2} times {b % 12 + 2}?", str((a % 12 + 2) * (b % 12 + 2)), "arithmetic"),
            (f'Reverse the letters of the word "{w}".', w[::-1], "strings"),
            (f'Write "{w}" in capital letters.', w.upper(), "strings"),
            (f'How many letters are in the word "{w}"?', str(len(w)), "strings"),
            (f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}.",
             ", ".join(map(str, sorted(nums))), "lists"),
            (f"Which is the largest of these numbers: {', '.join(map(str, nums))}?", str(max(nums)), "lists"),
            (f"What number comes next: {', '.join(str(start + i * step) for i in range(4))}?",
             str(start + 4 * step), "lists"),
            (f"What does the Python expression {expr} evaluate to?", repr(eval(expr)), "python"),  # noqa: S307
            (f"How many minutes are in {a % 9 + 1} hours?", str((a % 9 + 1) * 60), "arithmetic"),
            (f"What day comes {'after' if b % 2 else 'before'} {DAYS[a % 7]}?",
             DAYS[(a % 7 + (1 if b % 2 else -1)) % 7], "facts"),
        ][kind])
    return rows


def build() -> dict[str, list[dict[str, str]]]:
    rng = random.Random(SEED)
    pool = words()
    tables = [
        table_task(CAPITALS, ["What is the capital of {}?", "Name the capital city of {}."], "facts"),
        table_task(ANTONYMS, ['What is the opposite of "{}"?', 'Give an antonym of "{}".'], "words"),
        table_task(PLURALS, ['What is the plural of "{}"?', 'Write the plural form of "{}".'], "words"),
    ]
    splits: dict[str, list[dict[str, str]]] = {}
    for split, test, n in (("train", False, 900), ("test", True, 150)):
        words_here = [w for w in pool if held_out(w) == test]
        rows = [r for make in tables for r in make(rng, test)] + generated(rng, words_here, n)
        rng.shuffle(rows)
        seen: set[str] = set()
        splits[split] = [{"instruction": q, "response": a, "task": t} for q, a, t in rows
                         if not (q in seen or seen.add(q))]
    train_prompts = {r["instruction"] for r in splits["train"]}
    splits["test"] = [r for r in splits["test"] if r["instruction"] not in train_prompts]
    return splits


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, rows in build().items():
        with open(OUT / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} rows, tasks {dict(Counter(r['task'] for r in rows))}")


if __name__ == "__main__":
    main()
