"""Write hfx's bundled ``sentiment`` data set from the VADER sentiment lexicon (deterministic).

    pip install --no-deps vaderSentiment      # only to run this script; not a runtime dependency
    python scripts/make_bundled_data.py       # writes hfx/data/bundled/sentiment/{train,test}.jsonl

The VADER lexicon (Hutto & Gilbert, ICWSM 2014; MIT licence) lists about 7,500 words, emoticons and
chat acronyms, each rated by ten people from -4 (extremely negative) to +4 (extremely positive). We
keep dictionary words (lower-case letters only, length >= 3) whose mean rating has |mean| >= 1.5 and
whose ratings agree (standard deviation <= 1.0), leave out profanity, slurs and chat slang, and put
each word into a neutral sentence template chosen by the word's hash. Label 1 = positive rating.

Splits are made by word family (first four letters after stripping common suffixes), so that no
test word, and no inflection of it, appears in train. Each split is class-balanced.
Output rows: {"text", "label", "label_text", "word", "rating"}.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_PER_CLASS = {"train": 600, "test": 150}
MIN_ABS_MEAN, MAX_STD = 1.5, 1.0
# Templates that read well with an adjective ("{a}" is "a" or "an").
ADJECTIVE_TEMPLATES = [
    "The movie was {w}.",
    "I found the service {w}.",
    "What {a} {w} experience.",
    "The staff seemed {w} today.",
    "Honestly, the food was {w}.",
    "Overall, the book felt {w}.",
]
# Templates that take any word: noun, verb or adverb.
ANY_WORD_TEMPLATES = [
    'The review used one word: "{w}".',
    "One word sums up the hotel: {w}.",
    'My friend described the concert with a single word: "{w}".',
    'Asked about the trip, she said only: "{w}".',
    'The customer\'s whole comment was "{w}".',
    'In the survey, the answer was "{w}".',
]
# Endings that mostly make adjectives ("-ing" and "-ed" participles read as adjectives too), and
# endings that look like them but make nouns or adverbs. A rough rule: a few sentences read oddly.
# fmt: off
ADJECTIVE_SUFFIXES = ("ful", "ous", "ive", "able", "ible", "al", "ic", "less", "ent", "ant", "ish", "ed", "ing")
NOT_ADJECTIVE_SUFFIXES = ("ly", "ment", "ial", "val", "yal")
# Profanity, slurs and sexual violence (matched anywhere in the word) and chat slang (whole words).
BLOCKED_PARTS = (
    "fuck", "fuk", "shit", "bitch", "whore", "slut", "cunt", "nigg", "fag", "twat", "douche", "bastard",
    "asshole", "retard", "motherf", "cocksuck", "dickhead", "piss", "porn", "pedophil", "molest", "rape",
    "rapi", "scumbag", "dumbass", "jackass", "crap", "damn", "sex",
)
BLOCKED_WORDS = {"hell", "hellish", "tard", "lmao", "lol", "lulz", "haha", "hehe", "sux", "ugh", "wow", "yes", "aok"}
# Suffixes stripped to find a word's family (longest first).
SUFFIXES = sorted(
    ["ness", "nesses", "fully", "ful", "ly", "ings", "ing", "ed", "ers", "er", "est", "s", "es", "ments",
     "ment", "ity", "ities", "ism", "isms", "ist", "ists", "ous", "ously", "ive", "ively", "ion", "ions",
     "ies", "ied", "ier", "iest", "able", "ably", "y"],
    key=len, reverse=True,
)
# fmt: on


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def find_lexicon() -> Path:
    """Return the path of vader_lexicon.txt inside the installed vaderSentiment package."""
    spec = importlib.util.find_spec("vaderSentiment")
    if spec is None or spec.origin is None:
        raise SystemExit("vaderSentiment is not installed: run `pip install --no-deps vaderSentiment`")
    return Path(spec.origin).parent / "vader_lexicon.txt"


def read_words(path: Path) -> list[tuple[str, float, float]]:
    """Return (word, mean, std) for the dictionary words of the lexicon that pass the filters."""
    lines = path.read_text(encoding="utf-8").splitlines()
    # Emoticons and chat acronyms come first; the dictionary words follow, alphabetically from "abandon".
    start = next(i for i, line in enumerate(lines) if line.split("\t")[0] == "abandon")
    out = []
    for line in lines[start:]:
        word, mean, std = line.split("\t")[:3]
        if not re.fullmatch(r"[a-z]{3,}", word) or word in BLOCKED_WORDS:
            continue
        if any(part in word for part in BLOCKED_PARTS):
            continue
        if abs(float(mean)) >= MIN_ABS_MEAN and float(std) <= MAX_STD:
            out.append((word, float(mean), float(std)))
    return out


def family(word: str) -> str:
    """A crude stem: strip common suffixes (twice), keep the first four letters."""
    for _ in range(2):
        for suffix in SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
    return word[:4]


def sentence(word: str) -> str:
    """Put ``word`` into a template chosen by its hash (adjective templates only for adjective-like words)."""
    adjective = word.endswith(ADJECTIVE_SUFFIXES) and not word.endswith(NOT_ADJECTIVE_SUFFIXES)
    templates = ADJECTIVE_TEMPLATES + ANY_WORD_TEMPLATES if adjective else ANY_WORD_TEMPLATES
    template = templates[_hash("template:" + word) % len(templates)]
    return template.format(w=word, a="an" if word[0] in "aeiou" else "a")


def build(path: Path) -> dict[str, list[dict]]:
    """Return the rows of each split."""
    words = read_words(path)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for split in splits:
        for label in (0, 1):
            pool = [
                (w, m)
                for w, m, _ in words
                if (m > 0) == bool(label) and (_hash("split:" + family(w)) % 5 == 0) == (split == "test")
            ]
            pool.sort(key=lambda wm: _hash("pick:" + wm[0]))
            if len(pool) < N_PER_CLASS[split]:
                raise SystemExit(f"only {len(pool)} words for {split}/{label}")
            for w, m in pool[: N_PER_CLASS[split]]:
                splits[split].append(
                    {
                        "text": sentence(w),
                        "label": label,
                        "label_text": "positive" if label else "negative",
                        "word": w,
                        "rating": m,
                    }
                )
        splits[split].sort(key=lambda row: _hash("order:" + row["word"]))  # classes interleaved
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lexicon", type=Path, default=None, help="vader_lexicon.txt (default: installed)")
    parser.add_argument("--out", type=Path, default=ROOT / "hfx" / "data" / "bundled" / "sentiment")
    args = parser.parse_args()
    lexicon = args.lexicon or find_lexicon()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in build(lexicon).items():
        with open(args.out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        n_pos = sum(row["label"] for row in rows)
        print(f"{split}: {len(rows)} rows ({n_pos} positive) -> {args.out / f'{split}.jsonl'}")
    print("lexicon sha256:", hashlib.sha256(lexicon.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
