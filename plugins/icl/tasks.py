"""The bundled in-context tasks and one function per kind of table row (shared by the recipe and benchmarks).

    task = load_classification_task()                        # sentiment_foobar: label words "foo" / "bar"
    row = evaluate_classification(model, tok, task, IclConfig(num_fewshot=8, fewshot_selection="knn"))
    cot = load_cot_task()                                    # arithmetic_cot: 8 worked exemplars, 40 problems
    row = evaluate_cot(model, tok, cot, IclConfig(num_fewshot=8), mode="cot", self_consistency=True)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hfx.errors import HfxError
from hfx.scoring import context_length, score_choices
from hfx_plugins.icl.config import IclConfig
from hfx_plugins.icl.cot import extract_answer, generate_answers, normalize_number, self_consistency
from hfx_plugins.icl.prompts import Template, continuation_delimiter, fit_prompt
from hfx_plugins.icl.selection import select_examples

__all__ = ["CLASSIFICATION_TEMPLATE", "COT_TEMPLATE", "ClassificationTask", "CotTask", "evaluate_classification",
           "evaluate_cot", "load_classification_task", "load_cot_task"]

CLASSIFICATION_TEMPLATE = Template("Sentence: {text}\nLabel:", "{label_text}")
"""Prompt of one classification example; the label word follows after the target delimiter."""
COT_TEMPLATE = Template("Q: {question}\nA:", "{rationale}")
"""lm-eval's gsm8k-cot layout: the worked rationale ends "The answer is N."."""
DIRECT_TEMPLATE = Template("Q: {question}\nA:", "The answer is {answer}.")
"""Standard (answer-only) prompting: the same exemplars without their reasoning (Wei et al. 2022)."""


@dataclass
class ClassificationTask:
    """A bundled multiple-choice task: texts, integer labels and the label words that are scored."""

    name: str
    train: Any
    """``datasets.Dataset`` with ``text`` and ``label`` (the example pool)."""
    test: Any
    """``datasets.Dataset`` with ``text`` and ``label`` (the queries)."""
    label_words: list[str]
    """Choice string of each label (label 0 first)."""
    template: Template = CLASSIFICATION_TEMPLATE


@dataclass
class CotTask:
    """Word problems: worked exemplars (``question``, ``rationale``, ``answer``) and test problems."""

    name: str
    exemplars: Any
    test: Any


def load_classification_task(name: str = "sentiment_foobar", limit: int = 0) -> ClassificationTask:
    """Load a bundled classification set whose ``label`` feature names the label words (``sentiment_foobar``).

    Args:
        name: Bundled data set with ``text`` and a ClassLabel ``label`` (hfx.data.BUNDLED).
        limit: Keep the first ``limit`` test rows (0: all).
    """
    from hfx.data import load_bundled

    data = load_bundled(name)
    names = getattr(data["train"].features.get("label"), "names", None)
    if not names or "text" not in data["train"].column_names:
        raise HfxError(f"bundled set {name!r} is not a classification task (text + a named ClassLabel label)")
    test = data["test"].select(range(min(limit, len(data["test"])))) if limit else data["test"]
    return ClassificationTask(name, data["train"], test, list(names))


def load_cot_task(name: str = "arithmetic_cot", limit: int = 0) -> CotTask:
    """Load bundled word problems (train = worked exemplars, test = problems; first ``limit`` test rows)."""
    from hfx.data import load_bundled

    data = load_bundled(name)
    if not {"question", "rationale", "answer"} <= set(data["train"].column_names):
        raise HfxError(f"bundled set {name!r} has no question/rationale/answer columns")
    test = data["test"].select(range(min(limit, len(data["test"])))) if limit else data["test"]
    return CotTask(name, data["train"], test)


def _layout(cfg: IclConfig) -> dict[str, Any]:
    """:func:`fit_prompt`'s keyword arguments from the config (layout, chat template, system instruction)."""
    return {"fewshot_delimiter": cfg.fewshot_delimiter, "target_delimiter": cfg.target_delimiter,
            "system_instruction": cfg.system_instruction, "apply_chat_template": cfg.apply_chat_template,
            "fewshot_as_multiturn": cfg.fewshot_as_multiturn}


def classification_prompts(tokenizer: Any, task: ClassificationTask, cfg: IclConfig, label_words: list[str],
                           model: Any) -> tuple[list[str], int]:
    """Every test row's prompt with its k selected examples; returns (prompts, examples dropped in total)."""
    train = [dict(r, label_text=label_words[r["label"]]) for r in task.train]
    idx = select_examples(task.train["text"], task.test["text"], cfg.num_fewshot, cfg.fewshot_selection,
                          cfg.fewshot_random_seed, labels=task.train["label"], embedder=cfg.embedder)
    delimiter = continuation_delimiter(cfg.target_delimiter, cfg.apply_chat_template)
    reserve = max(len(tokenizer.encode(f"{delimiter}{w}", add_special_tokens=False)) for w in label_words)
    prompts, dropped = [], 0
    for row, chosen in zip(task.test, idx, strict=True):
        query = task.template.render(dict(row, label_text=""))[0]
        prompt, n = fit_prompt(tokenizer, query, [task.template.render(train[i]) for i in chosen],
                               context_length(model, cfg.max_length), reserve, **_layout(cfg))
        prompts.append(prompt)
        dropped += n
    return prompts, dropped


def evaluate_classification(model: Any, tokenizer: Any, task: ClassificationTask, cfg: IclConfig,
                            label_words: list[str] | None = None) -> dict[str, float]:
    """acc / acc_norm of k-shot prompting (``cfg.num_fewshot``, ``cfg.fewshot_selection``) on ``task.test``.

    ``label_words`` replaces the task's label words (a control row with words the model has a prior for).
    Each choice is scored after :func:`continuation_delimiter` (the target delimiter, none under a chat
    template), as lm-eval's ``construct_requests`` builds its requests.
    """
    words = label_words or task.label_words
    started = time.perf_counter()
    prompts, dropped = classification_prompts(tokenizer, task, cfg, words, model)
    res = score_choices(model, tokenizer, prompts, [words] * len(prompts), task.test["label"],
                        continuation_delimiter(cfg.target_delimiter, cfg.apply_chat_template), cfg.batch_size,
                        cfg.max_length)
    return {"acc": res.acc, "acc_norm": res.acc_norm, "n": len(prompts), "dropped_examples": dropped,
            "seconds": time.perf_counter() - started}


def evaluate_cot(model: Any, tokenizer: Any, task: CotTask, cfg: IclConfig, mode: str = "cot",
                 self_consistency_vote: bool = False, vote_sizes: Sequence[int] = ()) -> dict[str, Any]:
    """Exact match of generated answers on ``task.test``.

    Args:
        mode: ``cot`` (exemplars with their rationale, "The answer is N."), ``direct`` (exemplars with the
            answer only) or ``zero_cot`` (no exemplars, "Let's think step by step."; Kojima et al. 2022).
        self_consistency_vote: Sample ``cfg.repeats`` chains at ``cfg.temperature`` and take the majority answer.
        vote_sizes: With ``self_consistency_vote``, also score the majority of the first m chains for each m
            here (one sampling of ``max(repeats, *vote_sizes)`` chains serves every m, as Wang et al. 2022
            plot accuracy against the number of sampled paths).

    Returns:
        accuracy and correct (of the ``cfg.repeats``-chain vote, or the greedy chain), pattern_misses (chains
        where ``cfg.answer_pattern`` did not match), invalid (no answer at all), chains, n, dropped_examples,
        seconds, and (with ``self_consistency_vote``) ``votes``: ``{m: {"accuracy", "correct",
        "pattern_misses", "invalid", "chains"}}`` for each vote size m, counted on the first m chains.

    Raises:
        HfxError: an unknown mode, or a vote size < 1.
    """
    if mode not in ("cot", "direct", "zero_cot"):
        raise HfxError(f"mode must be cot, direct or zero_cot, got {mode!r}")
    started = time.perf_counter()
    template = DIRECT_TEMPLATE if mode == "direct" else COT_TEMPLATE
    k = 0 if mode == "zero_cot" else cfg.num_fewshot
    idx = select_examples(task.exemplars["question"], task.test["question"], k, "first_n")
    shots = [template.render(r) for r in task.exemplars]
    new_tokens = 16 if mode == "direct" else cfg.max_new_tokens
    prompts, dropped = [], 0
    for row, chosen in zip(task.test, idx, strict=True):
        query = COT_TEMPLATE.render(row)[0] + (" Let's think step by step." if mode == "zero_cot" else "")
        prompt, n = fit_prompt(tokenizer, query, [shots[i] for i in chosen], context_length(model, cfg.max_length),
                               new_tokens, **_layout(cfg))
        prompts.append(prompt)
        dropped += n
    if any(m < 1 for m in vote_sizes):
        raise HfxError(f"vote sizes must be >= 1 chains, got {list(vote_sizes)}")
    sizes = sorted({cfg.repeats, *vote_sizes}) if self_consistency_vote else [1]
    n_ret = sizes[-1]
    texts = generate_answers(model, tokenizer, prompts, new_tokens, do_sample=self_consistency_vote,
                             temperature=cfg.temperature, num_return_sequences=n_ret, seed=cfg.fewshot_random_seed,
                             shared_prefix_delimiter=cfg.fewshot_delimiter if k and not cfg.apply_chat_template else "")
    n = len(prompts)
    votes = {m: {"correct": 0, "pattern_misses": 0, "invalid": 0, "chains": n * m} for m in sizes}
    for chains, row in zip(texts, task.test, strict=True):
        found = [extract_answer(t, cfg.answer_pattern, cfg.answer_fallback) for t in chains]
        gold = normalize_number(str(row["answer"]))
        for m, vote in votes.items():  # the majority of the first m chains, and how their answers were found
            vote["correct"] += self_consistency([a for a, _ in found[:m]]) == gold
            vote["pattern_misses"] += sum(how != "pattern" for _, how in found[:m])
            vote["invalid"] += sum(how == "invalid" for _, how in found[:m])
    for vote in votes.values():
        vote["accuracy"] = vote["correct"] / max(n, 1)
    shown = cfg.repeats if self_consistency_vote else 1  # the row's own vote
    out: dict[str, Any] = {**votes[shown], "n": n, "dropped_examples": dropped, "seconds": time.perf_counter() - started}
    if self_consistency_vote:
        out["votes"] = votes
    return out
