"""Config of the ``icl`` plugin (in-context learning: prompts, example selection, lm-eval-style scoring).

:class:`IclConfig` holds what the drop-in functions take, named as lm-evaluation-harness names them
(``num_fewshot``, ``fewshot_delimiter``, ``target_delimiter``, ``fewshot_random_seed``, ``repeats``).
:class:`IclRunConfig` adds what only ``hfx run plugin=icl`` uses: which tasks and rows go in its table.
No torch import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hfx.errors import HfxError

__all__ = ["SELECTIONS", "IclConfig", "IclRunConfig"]

SELECTIONS = ("random", "first_n", "balanced", "knn")
"""Ways to choose the k examples: lm-eval's seeded random sampler, its first_n sampler, an equal number per
label, or the k nearest neighbours of the query by sentence embedding (KATE)."""

ANSWER_PATTERN = r"The answer is (\-?[0-9\.\,]+)."
"""lm-eval's gsm8k-cot strict-match regex."""


@dataclass
class IclConfig:
    """Prompts and scoring as lm-evaluation-harness does them (https://github.com/EleutherAI/lm-evaluation-harness)."""

    num_fewshot: int = 8
    """k: examples put before the query (0 = zero-shot)."""
    fewshot_selection: str = "random"
    """How the k examples are chosen: random (lm-eval's sampler, seeded), first_n, balanced (same count per
    label, seeded) or knn (the k nearest by sentence embedding, nearest last; Liu et al. 2021,
    https://arxiv.org/abs/2101.06804)."""
    fewshot_random_seed: int = 1234
    """Seed of the random and balanced selection (lm-eval's default few-shot seed)."""
    fewshot_delimiter: str = "\n\n"
    """Text between two examples, and between the last example and the query (lm-eval's default)."""
    target_delimiter: str = " "
    """Text between an example's input and its answer; also starts each scored continuation (lm-eval)."""
    embedder: str = "minilm"
    """Sentence-embedding model for knn selection (an offline name or folder, loaded with hfx.embed)."""
    apply_chat_template: bool = False
    """Render the prompt with the tokenizer's chat template (instruct models), as lm-eval's
    --apply_chat_template: the scored continuation is then the bare choice ("foo", not " foo"), and a
    prompt that starts with the BOS text gets no second BOS."""
    fewshot_as_multiturn: bool = True
    """With apply_chat_template: each example is a user turn and an assistant turn (lm-eval's default
    under a chat template); false: the whole text is one user turn. Ignored without a chat template."""
    system_instruction: str = ""
    """Text put before everything: the system turn under a chat template, else the start of the prompt
    (lm-eval's --system_instruction; joined to a task description by the few-shot delimiter). Empty: none."""
    max_length: int = 0
    """Token budget of prompt + continuation; 0: the model's max_position_embeddings. Examples that do not
    fit are dropped (farthest from the query first, and reported); the query is never truncated."""
    batch_size: int = 8
    """Requests per forward pass when scoring log-likelihoods (right-padded, as lm-eval's HF backend)."""
    answer_pattern: str = ANSWER_PATTERN
    """Regex whose first group is the answer of a chain of thought (lm-eval's gsm8k-cot strict match)."""
    answer_fallback: bool = True
    """When the pattern does not match, take the last number of the text (lm-eval's flexible-extract);
    false: such an answer is invalid. Either way the number of pattern misses is reported."""
    max_new_tokens: int = 96
    """Tokens generated per chain of thought (generation stops earlier at a stop string)."""
    repeats: int = 5
    """Self-consistency: sampled chains per question, majority vote on their answers (Wang et al. 2022,
    https://arxiv.org/abs/2203.11171; lm-eval's gsm8k-cot-self-consistency uses 64)."""
    temperature: float = 0.7
    """Sampling temperature of the self-consistency chains (Wang et al. sample at 0.5-0.7; lm-eval uses 0.2)."""

    def __post_init__(self) -> None:
        if self.num_fewshot < 0:
            raise HfxError(f"icl.num_fewshot must be >= 0 (0 = zero-shot), got {self.num_fewshot}")
        if self.fewshot_selection not in SELECTIONS:
            raise HfxError(f"icl.fewshot_selection must be one of {', '.join(SELECTIONS)}, got {self.fewshot_selection!r}")
        if self.max_length < 0 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise HfxError("icl.max_length must be >= 0, icl.batch_size and icl.max_new_tokens >= 1")
        if self.repeats < 1 or not self.temperature > 0:
            raise HfxError(f"icl.repeats must be >= 1 and icl.temperature > 0, got {self.repeats} and {self.temperature}")
        try:
            groups = re.compile(self.answer_pattern).groups
        except re.error as err:
            raise HfxError(f"icl.answer_pattern {self.answer_pattern!r} is not a valid regex: {err}") from None
        if groups < 1:
            raise HfxError(f"icl.answer_pattern {self.answer_pattern!r} needs a group around the answer, e.g. "
                           r"'The answer is (\-?[0-9\.\,]+).'")


@dataclass
class IclRunConfig(IclConfig):
    """The ``icl:`` section of ``hfx run``: :class:`IclConfig` plus the table the recipe prints."""

    classification_task: str = "sentiment_foobar"
    """Bundled multiple-choice task (text, label; label names are the choices) for zero-/few-shot rows;
    empty: no classification rows (``preset=cot``)."""
    natural_labels: list[str] = field(default_factory=lambda: ["negative", "positive"])
    """Label words of a zero-shot control row on the same texts (the words the model has a prior for);
    empty: no control row."""
    classification_limit: int = 0
    """Test rows scored for classification (0: all)."""
    cot_task: str = "arithmetic_cot"
    """Bundled word-problem task (question, rationale, answer; train = worked exemplars) for chain of thought."""
    cot_limit: int = 0
    """Test problems for the chain-of-thought rows (0: all)."""
    self_consistency: bool = True
    """Add the self-consistency row (icl.repeats sampled chains per problem)."""
    vote_sizes: list[int] = field(default_factory=list)
    """More self-consistency rows: the majority of the first m sampled chains for each m (e.g. [1, 5, 10]);
    one sampling of the largest m serves them all. Empty: only the icl.repeats row."""
    direct_rows: bool = True
    """Add the zero-shot and k-shot direct-answer rows of the chain-of-thought task."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.classification_limit < 0 or self.cot_limit < 0:
            raise HfxError("icl.classification_limit and icl.cot_limit must be >= 0 (0: the whole test split)")
        if any(m < 1 for m in self.vote_sizes):
            raise HfxError(f"icl.vote_sizes must be chain counts >= 1, got {list(self.vote_sizes)}")
