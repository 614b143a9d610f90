"""Real English prose that ships with Python: the topics of ``pydoc_data.topics``.

``pydoc_data.topics.topics`` maps about 80 keys ("assert", "with", ...) to the reference manual's text
for that topic: real technical English written by people, available on every Python install, so the
language-modelling and embedding recipes run offline. Everything here is deterministic: topics are
always taken in sorted-key order.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from hfx.errors import HfxError

__all__ = ["pydoc_paragraphs", "pydoc_sentences", "pydoc_texts", "pydoc_token_windows"]

# A heading underline such as "*****", "=====" or "-----".
_UNDERLINE = re.compile(r"^[*=\-~^]{3,}$")
# A sentence ends at ". ", "! " or "? " followed by an upper-case letter or a quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def pydoc_texts() -> list[str]:
    """Return the text of every ``pydoc_data.topics`` topic, topics sorted by key."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _prose_blocks(text: str) -> list[str]:
    """Split one topic into prose paragraphs: one line each, code, grammar and headings left out.

    Paragraphs are separated by blank lines. An indented paragraph is a code sample or a grammar
    production ("assert_stmt ::= ..."), a paragraph whose last line is an underline is a heading, one
    with "+---" or "|" lines is a table; none of them is prose.
    """
    blocks = []
    for para in re.split(r"\n\s*\n", text):
        lines = [line for line in para.split("\n") if line.strip()]
        if not lines or lines[0].startswith((" ", "\t")):
            continue
        if _UNDERLINE.match(lines[-1].strip()) or any(
            line.lstrip().startswith(("+-", "|")) for line in lines
        ):
            continue
        blocks.append(" ".join(line.strip() for line in lines))
    return blocks


def _split_sentences(paragraph: str) -> list[str]:
    """Split a one-line paragraph at sentence ends (". " before a capital letter)."""
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def pydoc_sentences(min_chars: int = 40, max_chars: int = 300) -> list[str]:
    """Return the prose sentences of the sorted topics whose length is within [min_chars, max_chars].

    Code samples, grammar productions and headings are left out; order is sorted-topic order, then
    the order in the text. With the defaults there are several thousand sentences.
    """
    out = []
    for text in pydoc_texts():
        for block in _prose_blocks(text):
            out.extend(s for s in _split_sentences(block) if min_chars <= len(s) <= max_chars)
    return out


def _chunk(blocks: list[str], min_chars: int, max_chars: int) -> list[str]:
    """Merge consecutive paragraphs until each chunk has ``min_chars``; cut long ones at sentence ends."""
    pieces: list[str] = []
    for block in blocks:
        if len(block) <= max_chars:
            pieces.append(block)
            continue
        current = ""
        for sentence in _split_sentences(block):
            if current and len(current) + 1 + len(sentence) > max_chars:
                pieces.append(current)
                current = ""
            current = f"{current} {sentence}".strip()
        if current:
            pieces.append(current)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > max_chars:
            chunks.append(current)
            current = ""
        current = f"{current} {piece}".strip()
        if len(current) >= min_chars:
            chunks.append(current)
            current = ""
    if current and chunks and len(chunks[-1]) + 1 + len(current) <= max_chars:
        chunks[-1] = f"{chunks[-1]} {current}"  # a short tail joins the chunk before it
    elif current:
        chunks.append(current)
    # A chunk can still exceed max_chars when a single sentence does; it is kept whole. Scraps
    # such as "See also:" are dropped.
    return [c for c in chunks if len(c) >= 40]


def pydoc_paragraphs(min_chars: int = 200, max_chars: int = 600) -> list[list[str]]:
    """Return, per sorted topic, its prose cut into chunks of about ``min_chars`` to ``max_chars``.

    Short paragraphs are merged with the next ones; long paragraphs are cut at sentence ends. The
    last chunk of a topic may be shorter than ``min_chars`` (chunks under 40 characters are dropped);
    a single sentence longer than ``max_chars`` is kept whole.
    """
    return [_chunk(_prose_blocks(text), min_chars, max_chars) for text in pydoc_texts()]


def pydoc_token_windows(tokenizer: Any, window: int = 512, n_windows: int = 12) -> torch.LongTensor:
    """Return the first ``n_windows * window`` tokens of the sorted topics as a (n_windows, window) tensor.

    The topics (full text, code included) are joined with blank lines and tokenized without special
    tokens, as for a perplexity measurement. Only a prefix of the text is tokenized, grown until it
    holds more tokens than needed, so the tokens kept are those of the full concatenation.

    Args:
        tokenizer: A transformers tokenizer.
        window: Tokens per row.
        n_windows: Rows.

    Returns:
        Token ids, shape (n_windows, window).

    Raises:
        HfxError: the whole text holds fewer than ``n_windows * window`` tokens.
    """
    text = "\n\n".join(pydoc_texts())
    need = window * n_windows
    n_chars = need * 6  # English averages 4 characters per BPE token; start a bit above
    while True:
        ids = tokenizer(text[:n_chars], add_special_tokens=False, verbose=False)["input_ids"]
        # The last tokens of a cut prefix may differ from the full text's; keep a margin of 8.
        if len(ids) >= need + 8 or n_chars >= len(text):
            break
        n_chars *= 2
    if len(ids) < need:
        raise HfxError(
            f"pydoc_data.topics has only {len(ids)} tokens, fewer than {n_windows} x {window}; ask for fewer windows"
        )
    return torch.tensor(ids[:need], dtype=torch.long).view(n_windows, window)  # (n_windows, window)
