"""Tiny random Llamas with a chat template, to check chat-templated scoring against lm-eval (fast, offline).

    tok = chat_tokenizer(["Sentence: great.\\nLabel: bar"])   # words keep their leading space: " foo" != "foo"
    folder = save_tiny_chat_model(tmp, "words")                # or "smollm2": the offline model's tokenizer

Two tokenizers, chosen for the two ways a chat template meets the scorer:

- ``words``: a word-level tokenizer over the bundled sentiment_foobar and arithmetic_cot texts whose tokens
  keep their leading space (``" foo"`` and ``"foo"`` are different ids, so a stray target delimiter changes
  the tokens), that adds ``<s>`` to every text, and whose chat template starts with ``{{ bos_token }}`` as
  Llama 3's does: the case where a second BOS can slip in (lm-eval's ``HFLM.tok_encode`` adds none to a
  text that starts with it). The generation prompt ends with ``<|assistant|>``, no whitespace after it.
- ``smollm2``: the offline smollm2-135m tokenizer (byte-level BPE, adds no BOS, ChatML template with a
  default system turn, generation prompt ending in ``"\\n"``, which the scorer moves into the continuation).

The model is a random ``LlamaForCausalLM`` (hidden 32, 2 layers, 4 heads, 2 KV heads, 512 positions, untied
output layer: with tied embeddings a random model mostly repeats the last input token, and greedy text
under a chat template is then empty), saved in float32 so that lm-eval's ``model="hf"`` and hfx load the
same folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hfx.errors import HfxError

__all__ = ["CHAT_TEMPLATE", "SYSTEM_INSTRUCTION", "TOKENIZERS", "chat_tokenizer", "save_tiny_chat_model"]

TOKENIZERS = ("words", "smollm2")
"""The tokenizers :func:`save_tiny_chat_model` can put beside the tiny model."""

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""The ``words`` tokenizer's template: the BOS text first (as Llama 3's ``{{ bos_token }}``), one
``<|role|>content</s>`` per turn, then ``<|assistant|>``."""

SYSTEM_INSTRUCTION = "You are a careful annotator. Answer with one word."
"""The system instruction of the chat-template checks (its words are in the ``words`` vocabulary)."""

_PIECES = r" ?[A-Za-z]+| ?[0-9]+|\s|[^\sA-Za-z0-9]"
"""A word or number with its leading space, one whitespace character, or one other character."""
_SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def chat_tokenizer(texts: Iterable[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over ``texts`` that adds ``<s>`` and has :data:`CHAT_TEMPLATE`.

    Every word (and number) of ``texts`` is in the vocabulary both with and without a leading space, in
    sorted order after the special tokens (ids 0-6: unk, pad, ``<s>``, ``</s>``, the three role tokens);
    other text maps to ``<unk>``. Decoding concatenates the pieces, so ``decode(encode(t))`` is ``t``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = {p for t in texts for p in re.findall(_PIECES, t)}
    pieces |= {p.lstrip(" ") for p in pieces} | {" " + p for p in pieces if p[0].isalnum()}
    vocab = {t: i for i, t in enumerate(_SPECIALS + sorted(pieces - set(_SPECIALS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECES), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    tok.add_special_tokens(_SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        model_max_length=512, model_input_names=["input_ids", "attention_mask"], chat_template=CHAT_TEMPLATE,
    )


def _words_tokenizer() -> Any:
    """:func:`chat_tokenizer` over the bundled sentiment_foobar sentences with their label words, the
    arithmetic_cot problems and rationales (``Q: ...\\nA: ...``), and :data:`SYSTEM_INSTRUCTION`."""
    from hfx.data import load_bundled

    data = load_bundled("sentiment_foobar")
    names = data["train"].features["label"].names
    texts = [f"Sentence: {t}\nLabel: {w}" for split in data.values() for t in split["text"] for w in names]
    cot = load_bundled("arithmetic_cot")
    texts += [f"Q: {r['question']}\nA: {r['rationale']}" for split in cot.values() for r in split]
    return chat_tokenizer(texts + [SYSTEM_INSTRUCTION])


def save_tiny_chat_model(folder: str | Path, tokenizer: str = "words", seed: int = 0) -> Path:
    """Save a tiny random Llama and a tokenizer with a chat template into ``folder``; return the folder.

    Args:
        folder: Where ``config.json``, ``model.safetensors`` and the tokenizer files go (created if needed).
        tokenizer: ``words`` (adds BOS, template writes it too) or ``smollm2`` (the offline model's).
        seed: Seed of the random weights.

    Raises:
        HfxError: an unknown ``tokenizer``.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if tokenizer not in TOKENIZERS:
        raise HfxError(f"tiny chat model tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}")
    if tokenizer == "words":
        tok = _words_tokenizer()
    else:
        from hfx.models.zoo import resolve_model

        tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):  # same seed -> same weights; the caller's RNG is untouched
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).float()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
