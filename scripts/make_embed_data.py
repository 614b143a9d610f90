"""Write the bundled sentence-embedding set ``pydoc_pairs`` (hfx/data/bundled/pydoc_pairs/{train,test}.jsonl).

    python scripts/make_embed_data.py

Source: the prose of Python's ``pydoc_data.topics`` (the reference manual, PSF licence), cut into
paragraphs and sentences by ``hfx.data.text``. Each row is one anchor sentence with three others:

- ``positive``: the next sentence of the same paragraph (score 1.0);
- ``related``: a sentence of the same topic, from another paragraph (score 0.5);
- ``negative``: a sentence of another topic (score 0.0).

The labels come from the manual's structure (adjacency, topic), not from human similarity ratings.
Paragraphs that the manual repeats under several topics (``compound`` holds ``if``, ``while``, ...) are
kept once, under the first topic in sorted order. Topics are split by a hash of their key: no test topic,
paragraph or sentence is seen in training. Deterministic: rerunning rewrites identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from pydoc_data.topics import topics

from hfx.data.text import _prose_blocks, _split_sentences

OUT = Path(__file__).resolve().parents[1] / "hfx" / "data" / "bundled" / "pydoc_pairs"
HELD_OUT = 5  # a topic goes to "test" when the first byte of sha1(key) % HELD_OUT == 0 (about 20% of topics)


def paragraphs_by_topic() -> dict[str, list[list[str]]]:
    """Topic -> its unique paragraphs, each a list of sentences of 40-300 characters."""
    seen: set[str] = set()
    out: dict[str, list[list[str]]] = {}
    for key in sorted(topics):
        for block in _prose_blocks(topics[key]):
            if block in seen:
                continue
            seen.add(block)
            sentences = [s for s in _split_sentences(block) if 40 <= len(s) <= 300]
            if sentences:
                out.setdefault(key, []).append(sentences)
    return out


def rows_for(keys: list[str], paras: dict[str, list[list[str]]], rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for key in keys:
        others = [k for k in keys if k != key]
        for p, para in enumerate(paras[key]):
            elsewhere = [s for q, other in enumerate(paras[key]) if q != p for s in other]
            if not elsewhere or not others:
                continue  # no same-topic sentence outside this paragraph: no "related" example
            for anchor, positive in zip(para, para[1:], strict=False):
                neg_topic = rng.choice(others)
                rows.append({
                    "anchor": anchor,
                    "positive": positive,
                    "related": rng.choice(elsewhere),
                    "negative": rng.choice([s for para2 in paras[neg_topic] for s in para2]),
                    "topic": key,
                })
    rng.shuffle(rows)  # mixed topics, so max_train_samples=N keeps several
    return rows


def main() -> None:
    paras = paragraphs_by_topic()
    test_keys = [k for k in paras if hashlib.sha1(k.encode()).digest()[0] % HELD_OUT == 0]
    train_keys = [k for k in paras if k not in test_keys]
    OUT.mkdir(parents=True, exist_ok=True)
    for split, keys in (("train", train_keys), ("test", test_keys)):
        rows = rows_for(keys, paras, random.Random(f"pydoc_pairs-{split}"))
        with open(OUT / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} rows from {len(keys)} topics")
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
