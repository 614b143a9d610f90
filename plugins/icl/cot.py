"""Generation, chain-of-thought answer extraction and self-consistency, as lm-eval's gsm8k-cot tasks do them.

    texts = generate_answers(model, tok, prompts, max_new_tokens=96)             # greedy, cut at "Q:" / "\\n\\n"
    answer, how = extract_answer(texts[0][0])                                    # ("11", "pattern")
    samples = generate_answers(model, tok, prompts, do_sample=True, temperature=0.7, num_return_sequences=5)
    votes = [self_consistency([extract_answer(t)[0] for t in s]) for s in samples]

- Extraction (``tasks/gsm8k/gsm8k-cot.yaml``): ``strict-match`` is the regex ``The answer is (\\-?[0-9\\.\\,]+).``,
  first match; ``flexible-extract`` takes the last match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)``. A chain where
  the pattern never matches counts as a pattern miss; with no number at all the answer is invalid
  (lm-eval's ``[invalid]``), which never equals a target.
- Exact match ignores ``,``, ``$`` and a trailing ``.`` (the task's ``regexes_to_ignore``) and case.
- Self-consistency (Wang et al. 2022, https://arxiv.org/abs/2203.11171; lm-eval's ``majority_vote``): the
  most common extracted answer of the sampled chains, ``Counter.most_common`` order (first seen wins a
  tie); invalid chains vote for ``[invalid]`` as in lm-eval.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from hfx.scoring import encode_text
from hfx_plugins.icl.config import ANSWER_PATTERN

__all__ = ["FLEXIBLE_PATTERN", "INVALID", "batch_special_tokens", "extract_answer", "generate_answers",
           "normalize_number", "self_consistency"]

FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
"""lm-eval's gsm8k-cot flexible-extract regex (its last match is the answer)."""
INVALID = "[invalid]"
"""The answer of a chain with no extractable number (lm-eval's fallback string)."""


def normalize_number(text: str) -> str:
    """Drop ``,`` and ``$``, then a trailing ``.``; strip and lower-case (gsm8k-cot's ``regexes_to_ignore``)."""
    return re.sub(r"\.$", "", re.sub(r"[,$]", "", text.strip())).strip().lower()


def extract_answer(text: str, pattern: str = ANSWER_PATTERN, fallback: bool = True) -> tuple[str, str]:
    """The answer of one chain of thought and how it was found.

    Args:
        text: The generated chain.
        pattern: Regex whose first group is the answer (first match wins).
        fallback: When ``pattern`` does not match, take the last number (lm-eval's flexible-extract).

    Returns:
        ``(answer, how)``: ``how`` is ``"pattern"``, ``"fallback"`` or ``"invalid"`` (answer ``[invalid]``).
    """
    match = re.search(pattern, text)
    if match:
        return normalize_number(match.group(1)), "pattern"
    if fallback:
        found = re.findall(FLEXIBLE_PATTERN, text)
        if found:
            last = found[-1]
            return normalize_number(last[0] or last[1]), "fallback"
    return INVALID, "invalid"


def self_consistency(answers: Sequence[str]) -> str:
    """Majority vote over the answers of sampled chains (``[invalid]`` counts as a vote, as in lm-eval)."""
    return Counter(answers).most_common(1)[0][0] if answers else INVALID


class _StopAt(StoppingCriteria):
    """Stop a sequence once its generated text contains a stop string (decoded, so any tokenizer works).

    transformers' own ``stop_strings`` maps strings to token pieces through the vocabulary, which fails on
    word-level tokenizers; decoding the new tokens each step costs little next to the forward pass.
    """

    def __init__(self, tokenizer: Any, until: Sequence[str], prompt_len: int) -> None:
        self.tokenizer, self.until, self.prompt_len = tokenizer, [s for s in until if s], prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)  # (B,)
        done = [any(s in t for s in self.until) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first stop string (lm-eval cuts generations the same way)."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


def batch_special_tokens(tokenizer: Any, prompts: Sequence[str]) -> bool:
    """Whether a batch of prompts is encoded with the tokenizer's special tokens: not when the first prompt
    already starts with the BOS text (a chat template that writes the BOS), so no prompt gets a second BOS
    (lm-eval 0.4.13 ``models/huggingface.py`` ``HFLM.tok_batch_encode``, ``has_bos_prefix(strings[0],
    tokenizer.bos_token)``)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and prompts and prompts[0].startswith(bos))


def _cache_arg(model: Any) -> str:
    """The forward's name for the KV cache: ``cache`` from transformers 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _shared_prefix(tokenizer: Any, prompts: Sequence[str], delimiter: str) -> tuple[list[int], list[list[int]]] | None:
    """Token ids of the prompts' common prefix (cut before its last ``delimiter``) and of each rest.

    The cut goes before the delimiter: BPE tokenizers encode a trailing "\\n\\n" as one token but
    "\\n\\nQ" as "\\n", "\\n", "Q" (SmolLM2), so the delimiter goes with the query.

    None when there is no such prefix or when tokenizing prefix and rest apart gives other ids than the
    whole prompt (a token merging across the cut): then every prompt is encoded whole.
    """
    common = os.path.commonprefix(list(prompts))
    cut = common.rfind(delimiter) if delimiter and delimiter in common else 0
    if cut == 0 or len(prompts) < 2:
        return None
    prefix = encode_text(tokenizer, prompts[0][:cut])  # one BOS, also when the prompt writes it
    rests = [tokenizer.encode(p[cut:], add_special_tokens=False) for p in prompts]
    if any(prefix + r != encode_text(tokenizer, p) for r, p in zip(rests, prompts, strict=True)):
        return None
    return prefix, rests


def _decode(model: Any, tokenizer: Any, cache: Any, rest: list[int], n: int, max_new_tokens: int,
            until: Sequence[str], temperature: float | None, gen: torch.Generator) -> list[str]:
    """Continue ``n`` copies of one prompt whose prefix is in ``cache``; greedy when ``temperature`` is None."""
    arg, device = _cache_arg(model), next(model.parameters()).device
    if n > 1:
        cache.batch_repeat_interleave(n)
    ids = torch.tensor([rest] * n, device=device)  # (n, R)
    new: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, use_cache=True, **{arg: cache})
        cache = getattr(out, "cache", None) or out.past_key_values
        logits = out.logits[:, -1].float()  # (n, V)
        if temperature is None:
            nxt = logits.argmax(-1)  # (n,)
        else:
            probs = torch.softmax(logits / temperature, -1)  # (n, V)
            nxt = torch.multinomial(probs.cpu(), 1, generator=gen)[:, 0].to(device)  # (n,)
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                new[i].append(t)
                text = tokenizer.decode(new[i], skip_special_tokens=True)
                done[i] = t == tokenizer.eos_token_id or any(s and s in text for s in until)
        if all(done):
            break
        ids = nxt[:, None]  # (n, 1)
    return [_cut(tokenizer.decode(t, skip_special_tokens=True), until) for t in new]


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 96,
    until: Sequence[str] = ("Q:", "\n\n"),
    do_sample: bool = False,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
    seed: int = 1234,
    batch_size: int = 4,
    shared_prefix_delimiter: str = "",
) -> list[list[str]]:
    """Continue each prompt; return, per prompt, its ``num_return_sequences`` texts cut at the first stop string.

    Greedy unless ``do_sample`` (then softmax at ``temperature``, top-k and top-p off, seeded with ``seed``).
    Prompts are left-padded in batches, encoded with the tokenizer's special tokens unless they already start
    with the BOS text (:func:`batch_special_tokens`: one BOS under a chat template that writes it, as lm-eval);
    generation of a sequence stops at a stop string or ``max_new_tokens``.
    With ``shared_prefix_delimiter`` (e.g. ``"\\n\\n"``), the prompts' common prefix up to its last delimiter
    (the k exemplars) is run once and its KV cache copied for each prompt, which is then decoded alone
    (token by token, the same greedy argmax / temperature sampling; the sampled tokens differ from
    ``generate``'s, whose random stream is consumed differently).
    """
    shared = _shared_prefix(tokenizer, prompts, shared_prefix_delimiter) if shared_prefix_delimiter else None
    if shared is not None:  # the k exemplars are computed once; each prompt only adds its query
        prefix, rests = shared
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        out0 = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
        cache0 = getattr(out0, "cache", None) or out0.past_key_values
        return [_decode(model, tokenizer, copy.deepcopy(cache0), rest, num_return_sequences, max_new_tokens, until,
                        temperature if do_sample else None, gen) for rest in rests]
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[list[str]] = []
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if do_sample else {
        "do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), batch_size):
                texts_in = list(prompts[start:start + batch_size])
                batch = tokenizer(texts_in, return_tensors="pt", padding=True,
                                  add_special_tokens=batch_special_tokens(tokenizer, texts_in)).to(device)  # (B, T)
                gen = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                                     pad_token_id=pad, **sampling,
                                     stopping_criteria=StoppingCriteriaList(
                                         [_StopAt(tokenizer, until, batch["input_ids"].shape[1])]))  # (B * n, T + new)
                texts = tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
                for i in range(0, len(texts), num_return_sequences):
                    out.append([_cut(t, until) for t in texts[i:i + num_return_sequences]])
    finally:
        tokenizer.padding_side = side
    return out
