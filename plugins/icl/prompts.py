"""Prompt construction as lm-evaluation-harness does it, with a token budget that never cuts the query.

    prompt = build_prompt("Review: great.\\nLabel:", [("Review: awful.\\nLabel:", "foo")])
    # 'Review: awful.\\nLabel: foo\\n\\nReview: great.\\nLabel:'   scored continuations: " foo", " bar"
    chat = render_prompt(tok, "Review: great.\\nLabel:", shots, apply_chat_template=True)  # scored: "foo", "bar"

Layout (lm-eval 0.4.13 ``api/task.py`` ``ConfigurableTask.fewshot_context`` / ``build_qa_turn``, and
``api/utils.py`` ``multiturn_to_singleturn``): the system instruction and the task description joined by
the few-shot delimiter, then each example as ``input + target_delimiter + answer + fewshot_delimiter``,
then the query's input with nothing after it. Under a chat template (``--apply_chat_template``) the system
part is a system turn, and the rest is either one user turn holding that same text
(``fewshot_as_multiturn=False``) or one user turn per example input and one assistant turn per answer,
with no delimiters, then the query as the last user turn (``fewshot_as_multiturn=True``, lm-eval's
default); the template's generation prompt follows. The scored continuation is ``target_delimiter +
choice`` in plain text, and the bare choice under a chat template (``construct_requests``, for a task
without ``gen_prefix``: none of hfx's tasks has one).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hfx.errors import HfxError
from hfx.scoring import encode_text

__all__ = ["Template", "build_prompt", "chat_messages", "chat_prompt", "continuation_delimiter", "fit_prompt",
           "render_prompt"]


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


def _maybe_delimit(prefix: str, suffix: str, delimiter: str) -> str:
    """``prefix + delimiter + suffix``, without the delimiter when either side has whitespace at the join, and
    just the other one when one is empty (lm-eval's ``api/utils.py`` ``maybe_delimit``)."""
    if not prefix or not suffix:
        return prefix or suffix
    return prefix + suffix if prefix[-1].isspace() or suffix[0].isspace() else prefix + delimiter + suffix


def build_prompt(
    query: str,
    examples: Sequence[tuple[str, str]] = (),
    fewshot_delimiter: str = "\n\n",
    target_delimiter: str = " ",
    description: str = "",
    system_instruction: str = "",
) -> str:
    """The plain-text prompt: system instruction and description, k worked examples, then the query input.

    Args:
        query: The query's rendered input (e.g. ``"Q: ...\\nA:"``); never shortened.
        examples: ``(input, answer)`` pairs, in prompt order (the last one sits next to the query).
        fewshot_delimiter: Text after each example (lm-eval's default ``"\\n\\n"``).
        target_delimiter: Text between an example's input and its answer (lm-eval's default ``" "``).
        description: Text before the first example (lm-eval's task ``description``), may be empty.
        system_instruction: Text before the description (lm-eval's ``--system_instruction``), joined to it
            by ``fewshot_delimiter`` unless either side has whitespace there; may be empty.
    """
    shots = "".join(f"{q}{target_delimiter}{a}{fewshot_delimiter}" for q, a in examples)
    return f"{_maybe_delimit(system_instruction, description, fewshot_delimiter)}{shots}{query}"


def chat_messages(
    query: str,
    examples: Sequence[tuple[str, str]] = (),
    fewshot_delimiter: str = "\n\n",
    target_delimiter: str = " ",
    description: str = "",
    system_instruction: str = "",
    fewshot_as_multiturn: bool = True,
) -> list[dict[str, str]]:
    """The chat turns lm-eval 0.4.13 gives the chat template (``fewshot_context`` with a chat template).

    A system turn (``system_instruction`` and ``description``, joined as in :func:`build_prompt`) when either
    is set; then, with ``fewshot_as_multiturn``, a user turn per example input and an assistant turn per
    answer (no delimiters) and the query as the last user turn; without it, one user turn holding
    :func:`build_prompt`'s text of the examples and the query. Arguments as in :func:`build_prompt`.
    """
    system = _maybe_delimit(system_instruction, description, fewshot_delimiter)
    turns = [{"role": "system", "content": system}] if system else []
    if not fewshot_as_multiturn:
        return turns + [{"role": "user", "content": build_prompt(query, examples, fewshot_delimiter, target_delimiter)}]
    for q, a in examples:
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return turns + [{"role": "user", "content": query}]


def chat_prompt(tokenizer: Any, messages: str | Sequence[Mapping[str, str]]) -> str:
    """The tokenizer's chat template applied to ``messages`` (a string: one user turn), ending with the
    assistant's generation prompt (lm-eval's ``HFLM.apply_chat_template``: ``tokenize=False,
    add_generation_prompt=True, continue_final_message=False``; a template that raises on the system
    role is retried without the system turn, as lm-eval does).

    Raises:
        HfxError: the tokenizer has no chat template (a base model: leave apply_chat_template off).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise HfxError("icl.apply_chat_template=true but the tokenizer has no chat template (a base model); "
                       "set icl.apply_chat_template=false")
    import jinja2

    turns = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
    kwargs = {"tokenize": False, "add_generation_prompt": True, "continue_final_message": False}
    try:
        return tokenizer.apply_chat_template(turns, **kwargs)
    except jinja2.exceptions.TemplateError:
        if not any(t["role"] == "system" for t in turns):
            raise
        warnings.warn("icl: the chat template refused the system turn; applied without it (as lm-eval does)",
                      stacklevel=2)
        return tokenizer.apply_chat_template([t for t in turns if t["role"] != "system"], **kwargs)


def render_prompt(
    tokenizer: Any,
    query: str,
    examples: Sequence[tuple[str, str]] = (),
    apply_chat_template: bool = False,
    fewshot_as_multiturn: bool = True,
    **layout: Any,
) -> str:
    """:func:`build_prompt`'s text, or with ``apply_chat_template`` the chat template applied to
    :func:`chat_messages` (``fewshot_as_multiturn`` is used only then).

    Args:
        **layout: ``fewshot_delimiter``, ``target_delimiter``, ``description``, ``system_instruction``.

    Raises:
        HfxError: ``apply_chat_template`` with a tokenizer that has no chat template.
    """
    if not apply_chat_template:
        return build_prompt(query, examples, **layout)
    return chat_prompt(tokenizer, chat_messages(query, examples, fewshot_as_multiturn=fewshot_as_multiturn, **layout))


def continuation_delimiter(target_delimiter: str, apply_chat_template: bool, gen_prefix: str | None = None) -> str:
    """Text put before each scored choice: ``target_delimiter``, but under a chat template only when the task
    has a ``gen_prefix`` that does not end in whitespace, else ``""`` (lm-eval 0.4.13 ``api/task.py``
    ``ConfigurableTask.construct_requests``, multiple choice): a chat prompt ends with the assistant's turn
    prefix, after which the answer starts bare ("foo", not " foo")."""
    if not apply_chat_template:
        return target_delimiter
    return target_delimiter if gen_prefix and not gen_prefix[-1].isspace() else ""


def fit_prompt(
    tokenizer: Any,
    query: str,
    examples: Sequence[tuple[str, str]],
    max_length: int,
    reserve: int = 0,
    apply_chat_template: bool = False,
    fewshot_as_multiturn: bool = True,
    **layout: Any,
) -> tuple[str, int]:
    """Build the prompt, dropping examples (farthest from the query first) until it fits ``max_length``.

    lm-eval instead cuts tokens off the left of an over-long request, which can cut into the query; here
    the query is kept whole, and each dropped example is counted and warned about.

    Args:
        tokenizer: The model's tokenizer (counts tokens as the scorer will: :func:`hfx.scoring.encode_text`,
            one BOS even when a chat template writes it).
        query: Rendered query input.
        examples: ``(input, answer)`` pairs in prompt order; the first ones are dropped first.
        max_length: Token budget of prompt + ``reserve``.
        reserve: Tokens kept free after the prompt (the longest continuation, or max_new_tokens).
        apply_chat_template, fewshot_as_multiturn: Render with the chat template (see :func:`render_prompt`).
        **layout: ``fewshot_delimiter``, ``target_delimiter``, ``description``, ``system_instruction``.

    Returns:
        ``(prompt, n_dropped)``.

    Raises:
        HfxError: the query alone (with ``reserve``) is longer than ``max_length``, or
            ``apply_chat_template`` with a tokenizer that has no chat template.
    """
    kept = list(examples)
    while True:
        prompt = render_prompt(tokenizer, query, kept, apply_chat_template, fewshot_as_multiturn, **layout)
        n = len(encode_text(tokenizer, prompt))
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
