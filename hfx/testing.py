"""Tiny random models of each family for tests, built in code: nothing is downloaded.

Every model has hidden size 32, 2 layers, 4 heads, MLP width 64 and at most 128 positions, and its
vocabulary is the tiny word-level tokenizer below (1024 entries: special tokens, punctuation, digits and
the most frequent lower-cased words of Python's own documentation, ``pydoc_data.topics``). The same seed
gives the same weights, and building a model leaves the global torch RNG untouched.

:func:`reference_twin` adapts one tiny model with an hfx plugin and a copy of it with peft, from the same RNG
state (the parity tests and ``hfx validate`` compare the two); :func:`adapt_with` is its one-library step,
which the benchmarks use on real models.
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
)

from hfx.errors import HfxError, did_you_mean

__all__ = [
    "PEFT_TASK_TYPES",
    "VOCAB_SIZE",
    "adapt_with",
    "reference_twin",
    "save_tiny_model",
    "tiny_bert",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_model",
    "tiny_t5",
    "tiny_tokenizer",
]

TokenizerKind = Literal["bert", "llama", "t5"]
VOCAB_SIZE = 1024

_SPECIALS: dict[str, list[str]] = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "llama": ["<pad>", "<unk>", "<s>", "</s>"],
    "t5": ["<pad>", "<unk>", "<s>", "</s>"],
}
_PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("0123456789")
_CHAT_WORDS = ["system", "user", "assistant"]  # role names of the tiny chat template
_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)

# task -> Auto class; tiny family -> tasks it supports (the first is its default) and tokenizer kind
_TASK_CLASSES: dict[str, Any] = {
    "base": AutoModel,
    "sequence-classification": AutoModelForSequenceClassification,
    "causal-lm": AutoModelForCausalLM,
    "seq2seq-lm": AutoModelForSeq2SeqLM,
    "masked-lm": AutoModelForMaskedLM,
}
_FAMILY_TASKS: dict[str, tuple[str, ...]] = {
    "bert": ("sequence-classification", "base", "masked-lm"),
    "llama": ("causal-lm", "base", "sequence-classification"),
    "gpt2": ("causal-lm", "base", "sequence-classification"),
    "t5": ("seq2seq-lm", "base", "sequence-classification"),
}
_FAMILY_KIND: dict[str, TokenizerKind] = {"bert": "bert", "llama": "llama", "gpt2": "llama", "t5": "t5"}


@functools.cache
def _vocab(kind: TokenizerKind) -> tuple[str, ...]:
    """Specials, punctuation, digits, then the most frequent words of pydoc_data.topics up to VOCAB_SIZE."""
    from pydoc_data.topics import topics

    counts = Counter(re.findall(r"[a-z]+", " ".join(topics.values()).lower()))
    head = _SPECIALS[kind] + _PUNCTUATION + _CHAT_WORDS
    words = [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if w not in head]
    return tuple(head + words[: VOCAB_SIZE - len(head)])  # ties broken alphabetically: deterministic


def tiny_tokenizer(kind: TokenizerKind = "bert") -> PreTrainedTokenizerFast:
    """A word-level tokenizer of VOCAB_SIZE entries; BERT-style ([CLS] x [SEP]), Llama-style (<s> x) or T5-style (x </s>).

    Raises:
        HfxError: an unknown ``kind``.
    """
    if kind not in _SPECIALS:
        raise HfxError(f"unknown tokenizer kind '{kind}'{did_you_mean(kind, _SPECIALS)}; choose one of: bert, llama, t5")
    vocab = {tok: i for i, tok in enumerate(_vocab(kind))}
    unk = _SPECIALS[kind][1]
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    # words, then every punctuation mark and digit on its own ("f(x)," -> f ( x ) ,)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation("isolated"), pre_tokenizers.Digits(True)]
    )
    if kind == "bert":
        pad, cls, sep, mask = "[PAD]", "[CLS]", "[SEP]", "[MASK]"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token=unk, pad_token=pad, cls_token=cls, sep_token=sep,
            mask_token=mask, model_max_length=128,
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    if kind == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", vocab["<s>"])]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", vocab["</s>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=unk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        model_max_length=128, model_input_names=["input_ids", "attention_mask"],
        chat_template=_CHAT_TEMPLATE if kind == "llama" else None,
    )


def _config(family: str, tok: PreTrainedTokenizerFast, num_labels: int) -> PretrainedConfig:
    """Tiny config of ``family``: hidden 32, 2 layers, 4 heads, MLP 64, 128 positions, ids from ``tok``."""
    v, pad, bos, eos = len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    if family == "bert":
        return BertConfig(
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, pad_token_id=pad, num_labels=num_labels,
        )
    if family == "llama":  # 2 KV heads for 4 query heads: grouped-query attention, as in SmolLM2
        return LlamaConfig(
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, pad_token_id=pad, bos_token_id=bos,
            eos_token_id=eos, num_labels=num_labels,
        )
    if family == "gpt2":  # GPT-2 keeps its projections in Conv1D (weight stored as (in, out))
        return GPT2Config(
            vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128,
            pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, num_labels=num_labels,
        )
    return T5Config(  # T5 has relative positions: no max-positions table
        vocab_size=v, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, num_labels=num_labels,
    )


def _set_dropout(config: PretrainedConfig, p: float) -> None:
    """Set every dropout probability of ``config`` (``hidden_dropout_prob``, ``attn_pdrop``, ``dropout_rate``, ...)."""
    for key, value in config.to_dict().items():
        if ("dropout" in key or key.endswith("pdrop")) and (value is None or isinstance(value, float)):
            setattr(config, key, p)


def tiny_model(
    family: str, task: str = "auto", seed: int = 0, *, num_labels: int = 2, dropout: float | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Build ``(model, tokenizer)`` for family bert/llama/gpt2/t5 and a task ("auto" = the family's main one).

    ``dropout`` (e.g. 0.0) replaces every dropout probability of the config; None keeps the family's defaults.

    Raises:
        HfxError: an unknown family, or a task the family's tiny model does not have.
    """
    if family not in _FAMILY_TASKS:
        raise HfxError(f"unknown tiny model family '{family}'{did_you_mean(family, _FAMILY_TASKS)}; choose one of: {', '.join(_FAMILY_TASKS)}")
    tasks = _FAMILY_TASKS[family]
    task = tasks[0] if task == "auto" else task
    if task not in tasks:
        raise HfxError(f"tiny {family} has no task '{task}'{did_you_mean(task, tasks)}; choose one of: {', '.join(tasks)}")
    tokenizer = tiny_tokenizer(_FAMILY_KIND[family])
    config = _config(family, tokenizer, num_labels)
    if dropout is not None:
        _set_dropout(config, dropout)
    with torch.random.fork_rng(devices=[]):  # same seed -> same weights; the caller's RNG is untouched
        torch.manual_seed(seed)
        model = _TASK_CLASSES[task].from_config(config)
    gen = getattr(model, "generation_config", None)
    if gen is not None:  # keep generate() consistent with the tokenizer
        gen.pad_token_id, gen.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        if family == "t5":
            gen.decoder_start_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def tiny_bert(task: str = "base", num_labels: int = 2, seed: int = 0) -> PreTrainedModel:
    """Tiny random BERT (task: base, sequence-classification or masked-lm), in eval mode."""
    return tiny_model("bert", task, seed, num_labels=num_labels)[0]


def tiny_llama(task: str = "causal-lm", num_labels: int = 2, seed: int = 0) -> PreTrainedModel:
    """Tiny random Llama with grouped-query attention (task: causal-lm, base or sequence-classification)."""
    return tiny_model("llama", task, seed, num_labels=num_labels)[0]


def tiny_gpt2(task: str = "causal-lm", num_labels: int = 2, seed: int = 0) -> PreTrainedModel:
    """Tiny random GPT-2, whose linear layers are Conv1D (task: causal-lm, base or sequence-classification)."""
    return tiny_model("gpt2", task, seed, num_labels=num_labels)[0]


def tiny_t5(task: str = "seq2seq-lm", num_labels: int = 2, seed: int = 0) -> PreTrainedModel:
    """Tiny random T5 encoder-decoder (task: seq2seq-lm, base or sequence-classification)."""
    return tiny_model("t5", task, seed, num_labels=num_labels)[0]


def save_tiny_model(
    path: str | Path, family: str = "bert", task: str = "sequence-classification", seed: int = 0,
    *, num_labels: int = 2, dropout: float | None = None,
) -> Path:
    """Write a tiny model (safetensors) and its tokenizer into ``path`` so ``load_model(path, task)`` loads it.

    ``dropout=0.0`` makes training deterministic whatever the batch split (for equivalence tests).
    """
    path = Path(path)
    model, tokenizer = tiny_model(family, task, seed, num_labels=num_labels, dropout=dropout)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


# tiny model's task -> peft's task_type (the PeftModel subclass get_peft_model wraps it in)
PEFT_TASK_TYPES: dict[str, str] = {"causal-lm": "CAUSAL_LM", "seq2seq-lm": "SEQ_2_SEQ_LM",
                                   "sequence-classification": "SEQ_CLS", "base": "FEATURE_EXTRACTION"}


def adapt_with(library: Literal["hfx", "peft"], model: PreTrainedModel, plugin: str, peft_config: str,
               task_type: str, seed: int = 0, **fields: Any) -> Any:
    """``model`` adapted by one library, right after ``torch.manual_seed(seed)``.

    hfx: ``hfx.apply(model, plugin, **fields)``; peft: ``get_peft_model(model, peft.<peft_config>(task_type=
    task_type, **fields))``. hfx's plugins name their fields as peft does, so the same ``fields`` configure both,
    and from the same seed both draw the same initial weights. Only the peft branch imports peft (a benchmark's
    hfx run stays free of it). The global torch RNG is left seeded (a benchmark's run continues from it);
    :func:`reference_twin` restores the caller's.

    Args:
        library: ``"hfx"`` or ``"peft"``.
        model: The model to adapt (in place, as both libraries do).
        plugin: The hfx plugin (``"lora"``, ``"prefix_tuning"``, ...).
        peft_config: The name of peft's config class for the same method (``"LoraConfig"``, ...).
        task_type: peft's task type (``CAUSAL_LM``, ``SEQ_2_SEQ_LM``, ``SEQ_CLS``, ...); hfx infers its own.
        seed: Seed of torch's RNG before adapting.

    Raises:
        HfxError: an unknown ``library``, or what ``hfx.apply`` raises for the fields.
    """
    if library not in ("hfx", "peft"):
        raise HfxError(f"unknown library '{library}'; choose hfx or peft")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renames, read by peft
        warnings.filterwarnings("ignore", ".*fan_in_fan_out", UserWarning)  # peft's note on GPT-2's Conv1D
        if library == "hfx":
            import hfx

            return hfx.apply(model, plugin, **fields)
        import peft

        return peft.get_peft_model(model, getattr(peft, peft_config)(task_type=task_type, **fields))


def reference_twin(
    family: str, plugin: str, peft_config: str, seed: int = 0, *, task: str = "auto",
    dropout: float | None = None, **fields: Any,
) -> tuple[PreTrainedModel, Any, PreTrainedTokenizerFast]:
    """``(hfx model, peft model, tokenizer)``: one tiny model adapted by hfx and a deep copy of it by peft.

    Each library adapts from torch's RNG seeded with ``seed`` (:func:`adapt_with`), so both draw the same initial
    weights; the caller's RNG state is restored afterwards. Fields left out take each library's default: for
    LoRA's ``target_modules`` that is peft's table, ``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`` in
    ``peft.utils.constants`` (gpt2: c_attn; llama: q_proj, v_proj; bert: query, value; t5: q, v), which hfx's
    lora follows. peft's task type comes from the tiny model's task (:data:`PEFT_TASK_TYPES`).

    Args:
        family: bert, llama, gpt2 or t5 (:func:`tiny_model`).
        plugin: The hfx plugin (``"lora"``, ``"prefix_tuning"``, ``"prompt_tuning"``).
        peft_config: The name of peft's config class for the same method (``"LoraConfig"``, ...).
        seed: Seed of torch's RNG before each library adapts its copy (the base model is always seed 0).
        task: The tiny model's task ("auto": the family's main one).
        dropout: Every dropout probability of the base model (e.g. 0.0 for training side by side); None keeps
            the family's defaults.
        **fields: The plugin's config fields, named as peft names them.

    Raises:
        HfxError: what :func:`tiny_model` raises, and what ``hfx.apply`` raises for the fields.
    """
    base, tokenizer = tiny_model(family, task, dropout=dropout)
    task_type = PEFT_TASK_TYPES[task if task != "auto" else _FAMILY_TASKS[family][0]]
    twin = copy.deepcopy(base)
    with torch.random.fork_rng(devices=[]):
        ours = adapt_with("hfx", base, plugin, peft_config, task_type, seed, **fields)
        theirs = adapt_with("peft", twin, plugin, peft_config, task_type, seed, **fields)
    return ours, theirs, tokenizer
