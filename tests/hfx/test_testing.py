"""hfx.testing: the tiny random models run, are deterministic, and their tokenizers round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer
from transformers.pytorch_utils import Conv1D

from hfx.errors import HfxError
from hfx.testing import (
    VOCAB_SIZE,
    adapt_with,
    reference_twin,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_model,
    tiny_t5,
    tiny_tokenizer,
)

TEXTS = ["The class is an object.", "A function returns a value"]


@pytest.mark.parametrize(
    ("family", "task"),
    [("bert", "base"), ("bert", "sequence-classification"), ("bert", "masked-lm"),
     ("llama", "causal-lm"), ("llama", "base"), ("llama", "sequence-classification"),
     ("gpt2", "causal-lm"), ("gpt2", "sequence-classification"), ("t5", "seq2seq-lm"), ("t5", "base")],
)
def test_forward_shapes(family: str, task: str) -> None:
    model, tok = tiny_model(family, task)
    assert not model.training
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    B, T = batch["input_ids"].shape
    if family == "t5":  # decoder input: the targets shifted right, made by the model from labels
        batch["labels" if task == "seq2seq-lm" else "decoder_input_ids"] = batch["input_ids"]
    with torch.no_grad():
        out = model(**batch)
    if task == "base":
        assert out.last_hidden_state.shape == (B, T, 32)  # hidden size 32
    elif task == "sequence-classification":
        assert out.logits.shape == (B, 2)
    else:
        assert out.logits.shape == (B, T, VOCAB_SIZE)
    if task == "seq2seq-lm":
        assert torch.isfinite(out.loss)


def test_tiny_configs_are_tiny() -> None:
    bert, llama, gpt2, t5 = tiny_bert(), tiny_llama(), tiny_gpt2(), tiny_t5()
    assert (bert.config.hidden_size, bert.config.num_hidden_layers, bert.config.num_attention_heads) == (32, 2, 4)
    assert (llama.config.intermediate_size, llama.config.num_key_value_heads) == (64, 2)
    assert isinstance(gpt2.transformer.h[0].attn.c_attn, Conv1D)  # GPT-2 keeps Conv1D, weight (in, out)
    assert gpt2.transformer.h[0].attn.c_attn.weight.shape == (32, 96)  # q, k, v fused: 3 x 32 outputs
    assert t5.config.is_encoder_decoder and t5.config.decoder_start_token_id == 0  # <pad>, as in T5
    assert all(sum(p.numel() for p in m.parameters()) < 100_000 for m in (bert, llama, gpt2, t5))


@pytest.mark.parametrize("build", [tiny_bert, tiny_llama, tiny_gpt2, tiny_t5])
def test_same_seed_same_weights(build) -> None:
    rng = torch.random.get_rng_state()
    a, b, c = build(seed=0).state_dict(), build(seed=0).state_dict(), build(seed=1).state_dict()
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's RNG is untouched
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_llama_generates_and_has_chat_template() -> None:
    model, tok = tiny_model("llama")
    ids = tok.apply_chat_template([{"role": "user", "content": "what is a class?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)  # (1, T + <= 4)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 4
    assert tok.decode(ids["input_ids"][0]) == "<s> user : what is a class ? </s> <s> assistant :"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("bert", ["[CLS]", "the", "class", "(", "x", ")", "[UNK]", "[SEP]"]),
        ("llama", ["<s>", "the", "class", "(", "x", ")", "<unk>"]),
        ("t5", ["the", "class", "(", "x", ")", "<unk>", "</s>"]),
    ],
)
def test_tokenizer_round_trip(tmp_path: Path, kind: str, expected: list[str]) -> None:
    tok = tiny_tokenizer(kind)  # type: ignore[arg-type]
    assert len(tok) == VOCAB_SIZE
    text = "The CLASS(x) qwzzy"  # lower-cased; punctuation split off; qwzzy is not an English word
    ids = tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == expected
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == ids and loaded.pad_token == tok.pad_token
    assert loaded.decode(ids, skip_special_tokens=True) == " ".join(t for t in expected if t not in tok.all_special_tokens)


def test_tokenizer_vocab_is_deterministic_english() -> None:
    vocab = tiny_tokenizer("bert").get_vocab()
    # the most frequent word of pydoc_data.topics is "the" (4585 times in Python 3.11's copy)
    assert vocab["[PAD]"] == 0 and "the" in vocab and "function" in vocab
    assert vocab == tiny_tokenizer("bert").get_vocab()


def test_bad_family_task_and_kind() -> None:
    with pytest.raises(HfxError, match="did you mean 'llama'"):
        tiny_model("lama")
    with pytest.raises(HfxError, match="tiny bert has no task 'causal-lm'"):
        tiny_bert("causal-lm")
    with pytest.raises(HfxError, match="did you mean 'bert'"):
        tiny_tokenizer("bertt")  # type: ignore[arg-type]


@pytest.mark.parametrize(("family", "task", "task_type"), [
    ("llama", "auto", "CAUSAL_LM"), ("gpt2", "auto", "CAUSAL_LM"), ("bert", "auto", "SEQ_CLS"),
    ("t5", "auto", "SEQ_2_SEQ_LM"), ("bert", "base", "FEATURE_EXTRACTION"),
])
def test_reference_twin_same_start_and_peft_task(family: str, task: str, task_type: str) -> None:
    from peft import PeftModel

    torch.manual_seed(123)
    state = torch.get_rng_state()
    ours, theirs, _ = reference_twin(family, "lora", "LoraConfig", seed=3, task=task, r=2)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was
    assert isinstance(theirs, PeftModel) and not isinstance(ours, PeftModel)  # hfx keeps a transformers model
    assert theirs.peft_config["default"].task_type == task_type  # peft's PeftModel subclass for the task
    a = {k: v for k, v in ours.state_dict().items() if "lora_A" in k}
    b = {k.removeprefix("base_model.model."): v for k, v in theirs.state_dict().items() if "lora_A" in k}
    assert a.keys() == b.keys() and a  # peft's default targets, adapted by both
    for key in a:  # the same RNG state before each library's init: the same Kaiming-uniform A
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    other, _, _ = reference_twin(family, "lora", "LoraConfig", seed=4, task=task, r=2)
    assert not torch.equal(next(iter(a.values())), other.state_dict()[next(iter(a))])  # the seed matters


def test_adapt_with_names_the_libraries() -> None:
    with pytest.raises(HfxError, match="unknown library 'torch'; choose hfx or peft"):
        adapt_with("torch", tiny_llama(), "lora", "LoraConfig", "CAUSAL_LM")  # type: ignore[arg-type]
