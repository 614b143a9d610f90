"""Prompt construction as lm-evaluation-harness does it, with a token budget that never cuts the query.

    prompt = build_prompt("Review: great.\\nLabel:", [("Review: awful.\\nLabel:", "foo")])
    # 'Review: awful.\\nLabel: foo\\n\\nReview: great.\\nLabel:'   scored continuations: " foo", " bar"

Layout (lm-eval 0.4.13 ``ConfigurableTask.fewshot_context`` / ``build_qa_turn``): ``description``, then each
example as ``input + target_delimiter + answer + fewshot_delimiter``, then the query's input with nothing
after it; the scored continuation is ``target_delimiter + choice``. With a chat template the whole text
is one user turn followed by the assistant's generation prompt (lm-eval's ``--apply_chat_template``
without ``--fewshot_as_multiturn``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hfx.errors import HfxError

__all__ = ["Template", "build_prompt", "chat_prompt", "fit_prompt"]


@dataclass(frozen=True)
class Template:
    """How a data row becomes an example: ``input`` and ``target`` are ``str.format`` strings over the row.

    Example: ``Template("Review: {text}\\nLabel:", "{label_text}")`` (the target of a multiple-choice query
    is not rendered: its choices are scored instead).
    """

    input: str
    """Format string of the question part, e.g. ``"Q: {question}\\nA:"``."""
    target: str
    """Format string of the answer part of an example, e.g. ``"{rationale}"``."""

    def render(self, row: Mapping[str, Any]) -> tuple[str, str]:
        """Return ``(input, target)`` for ``row``.

        Raises:
            HfxError: the row lacks a field the template names.
        """
        try:
            return self.input.format(**row), self.target.format(**row)
        except KeyError as err:
            raise HfxError(f"template field {err} is not a column of the row (columns: {', '.join(row)})") from None


def build_prompt(
    query: str,
    examples: Sequence[tuple[str, str]] = (),
    fewshot_delimiter: str = "\n\n",
    target_delimiter: str = " ",
    description: str = "",
) -> str:
    """The plain-text prompt: description, k worked examples, then the query input (lm-eval's layout).

    Args:
        query: The query's rendered input (e.g. ``"Q: ...\\nA:"``); never shortened.
        examples: ``(input, answer)`` pairs, in prompt order (the last one sits next to the query).
        fewshot_delimiter: Text after each example (lm-eval's default ``"\\n\\n"``).
        target_delimiter: Text between an example's input and its answer (lm-eval's default ``" "``).
        description: Text before the first example (lm-eval's task ``description``), may be empty.
    """
    shots = "".join(f"{q}{target_delimiter}{a}{fewshot_delimiter}" for q, a in examples)
    return f"{description}{shots}{query}"


def chat_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """``prompt`` as one user turn of the tokenizer's chat template, ending with the assistant's turn prefix.

    Raises:
        HfxError: the tokenizer has no chat template (a base model: leave use_chat_template off).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise HfxError("icl.use_chat_template=true but the tokenizer has no chat template (a base model); "
                       "set icl.use_chat_template=false")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def fit_prompt(
    tokenizer: Any,
    query: str,
    examples: Sequence[tuple[str, str]],
    max_length: int,
    reserve: int = 0,
    use_chat_template: bool = False,
    **layout: Any,
) -> tuple[str, int]:
    """Build the prompt, dropping examples (farthest from the query first) until it fits ``max_length``.

    lm-eval instead cuts tokens off the left of an over-long request, which can cut into the query; here
    the query is kept whole, and each dropped example is counted and warned about.

    Args:
        tokenizer: The model's tokenizer (counts tokens as the scorer will).
        query: Rendered query input.
        examples: ``(input, answer)`` pairs in prompt order; the first ones are dropped first.
        max_length: Token budget of prompt + ``reserve``.
        reserve: Tokens kept free after the prompt (the longest continuation, or max_new_tokens).
        use_chat_template: Wrap the prompt with :func:`chat_prompt` before counting.
        **layout: ``fewshot_delimiter``, ``target_delimiter``, ``description`` for :func:`build_prompt`.

    Returns:
        ``(prompt, n_dropped)``.

    Raises:
        HfxError: the query alone (with ``reserve``) is longer than ``max_length``.
    """
    kept = list(examples)
    while True:
        prompt = build_prompt(query, kept, **layout)
        if use_chat_template:
            prompt = chat_prompt(tokenizer, prompt)
        n = len(tokenizer.encode(prompt))
        if n + reserve <= max_length:
            break
        if not kept:
            raise HfxError(f"the query alone is {n} tokens (+{reserve} reserved for the answer), more than the "
                           f"model's {max_length}; the query is never truncated: shorten it or raise icl.max_length")
        kept = kept[1:]
    dropped = len(examples) - len(kept)
    if dropped:
        warnings.warn(f"icl: dropped {dropped} of {len(examples)} examples so the prompt fits {max_length} tokens "
                      f"(query kept whole)", stacklevel=2)
    return prompt, dropped
