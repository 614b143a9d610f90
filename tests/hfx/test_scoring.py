"""hfx.scoring: the one context/continuation split and log-likelihood scorer (icl and the prompt-learning recipes).

Expected values come from lm-evaluation-harness 0.4.13's source (the wheel's ``lm_eval/``):
``api/model.py`` ``TemplateLM._encode_pair`` (trailing spaces move to the continuation; split after
``len(encode(context))``), ``api/model.py`` ``TemplateLM.loglikelihood`` (an empty context becomes the prefix
token, ``models/huggingface.py`` ``HFLM.prefix_token_id``: BOS, else EOS; a continuation that starts with it
gives up its first token instead), ``models/huggingface.py`` ``HFLM.tok_encode`` (no second BOS on a text that
starts with it) and ``HFLM._loglikelihood_tokens`` (the input is ``(context + continuation)[-(max_length+1):][:-1]``),
recomputed here by hand from the tiny model's log-softmax.
"""

from __future__ import annotations

import pytest
import torch

from hfx.errors import HfxError
from hfx.scoring import encode_pair, encode_text, loglikelihood
from hfx.testing import tiny_model


class WordTokenizer:
    """One id per space-separated word ('_' marks a leading space), BOS optional: the rules without BPE."""

    def __init__(self, bos: int | None, eos: int | None) -> None:
        self.bos_token_id, self.eos_token_id, self.vocab = bos, eos, {"<s>": 1, "</s>": 2}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        words = text.replace(" ", " _").split()
        ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in words]
        return ([self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []) + ids

    def decode(self, ids: list[int]) -> str:
        names = {v: k for k, v in self.vocab.items()}
        return "".join(names[i].replace("_", " ") for i in ids)


def test_empty_context_is_the_bos_token() -> None:
    tok = WordTokenizer(bos=1, eos=2)
    assert encode_pair(tok, "", " yes") == ([1], tok.encode(" yes", add_special_tokens=False))


def test_empty_context_without_bos_is_the_eos_token() -> None:
    tok = WordTokenizer(bos=None, eos=2)
    ctx, cont = encode_pair(tok, "", " yes")
    assert ctx == [2] and cont == tok.encode(" yes")


def test_continuation_starting_with_the_prefix_token_gives_it_up_as_context() -> None:
    tok = WordTokenizer(bos=None, eos=2)
    assert encode_pair(tok, "", "</s> yes") == ([2], tok.encode(" yes"))


def test_context_that_starts_with_bos_text_gets_no_second_bos() -> None:
    _, tok = tiny_model("llama")
    ctx, cont = encode_pair(tok, tok.bos_token + "the value", " of")
    assert ctx == tok.encode("the value") and ctx.count(tok.bos_token_id) == 1
    assert ctx + cont == tok.encode("the value of")


def test_encode_text_adds_the_bos_only_when_the_text_lacks_it() -> None:
    # HFLM.tok_encode: add_special_tokens=False when has_bos_prefix(text, decode(prefix_token_id)); the tiny
    # Llama's chat template writes "<s>" itself, so the rendered chat prompt keeps exactly one BOS.
    _, tok = tiny_model("llama")
    chat = tok.apply_chat_template([{"role": "user", "content": "the value"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.startswith(tok.bos_token) and tok.encode(chat)[:2] == [tok.bos_token_id] * 2
    assert encode_text(tok, chat) == tok.encode(chat, add_special_tokens=False)
    assert encode_text(tok, chat).count(tok.bos_token_id) == chat.count(tok.bos_token)
    assert encode_text(tok, "the value") == [tok.bos_token_id, *tok.encode("the value", add_special_tokens=False)]


def test_blank_context_without_bos_is_refused() -> None:
    model, _ = tiny_model("llama")
    with pytest.raises(HfxError, match="has no tokens"):
        loglikelihood(model, WordTokenizer(bos=None, eos=2), [("  ", "yes")])


def test_empty_context_scores_after_bos() -> None:
    model, tok = tiny_model("llama")
    ((ll, _),) = loglikelihood(model, tok, [("", " the value")])
    cont = tok.encode(" the value", add_special_tokens=False)
    ids = [tok.bos_token_id, *cont]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids[:-1]])).logits[0].double().log_softmax(-1)  # (T - 1, V)
    assert ll == pytest.approx(sum(float(logp[j, t]) for j, t in enumerate(cont)), abs=1e-5)
