"""Prompt tuning with gradient checkpointing, masks and positions, strict loading and bad input.

Expected values: the same model without gradient checkpointing (same losses and gradients), the same call
with the mask or positions left out, and peft 0.21.2's file layout (prompt_embeddings (n * s, d))."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.prompt_tuning import get_encoder
from hfx_plugins.prompt_tuning.checks import batch, logits, pair

TEXT = ["the function returns a new list of values"]


def test_gradient_checkpointing_gives_the_same_loss_and_gradient() -> None:
    grads, losses = [], []
    for checkpointing in (False, True):
        model, tok = tiny_model("llama", dropout=0.0)
        torch.manual_seed(0)
        hfx.apply(model, "prompt_tuning", num_virtual_tokens=3)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        x = dict(tok(TEXT, return_tensors="pt"))
        loss = model(**x, labels=x["input_ids"]).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(get_encoder(model).embedding.weight.grad.clone())
    assert abs(losses[0] - losses[1]) <= 1e-6 and (grads[0] - grads[1]).abs().max() <= 1e-6
    assert grads[0].abs().sum() > 0


def test_mask_and_positions_given_or_not_give_the_same_logits() -> None:
    model, tok = tiny_model("gpt2")
    hfx.apply(model, "prompt_tuning", num_virtual_tokens=3)
    x = dict(tok(TEXT, return_tensors="pt"))
    plain = logits(model, {"input_ids": x["input_ids"]})
    assert plain.shape[:2] == x["input_ids"].shape  # (B, T, V): the virtual positions are dropped
    full = torch.ones(1, 3 + x["input_ids"].shape[1], dtype=torch.long)
    for other in (x, {**x, "attention_mask": full}, {**x, "position_ids": torch.arange(x["input_ids"].shape[1])[None]}):
        assert (logits(model, other) - plain).abs().max() <= 1e-6


def test_prompt_of_other_width_names_both_shapes(tmp_path: Path) -> None:
    ours, _, _ = pair("llama")
    hfx.save(ours, tmp_path)
    _, tok = tiny_model("llama")
    wide = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=128))
    with pytest.raises(HfxError, match=r"\(4, 32\) but LlamaForCausalLM needs \(4, 48\).*'model.embed_tokens'"):
        hfx.load(wide, tmp_path)
    assert not hasattr(wide, "prompt_encoder")
    t5, _ = tiny_model("t5")
    with pytest.raises(HfxError, match="task_type is CAUSAL_LM but T5ForConditionalGeneration is a SEQ_2_SEQ_LM"):
        hfx.load(t5, tmp_path)


def test_bad_input_is_one_line_errors() -> None:
    model, tok = tiny_model("llama")
    for n in (0, -1):
        with pytest.raises(HfxError, match="num_virtual_tokens must be a positive integer") as err:
            hfx.apply(model, "prompt_tuning", num_virtual_tokens=n)
        assert "\n" not in str(err.value)
    with pytest.raises(HfxError, match=r"prompt_tuning.label_words is a field of `hfx run`"):
        hfx.apply(model, "prompt_tuning", label_words=[" no", " yes"])
    with pytest.raises(HfxError, match="needs prompt_tuning_init_text"):
        hfx.apply(model, "prompt_tuning", prompt_tuning_init="TEXT")
    with pytest.raises(HfxError, match="needs tokenizer_name_or_path"):
        hfx.apply(model, "prompt_tuning", prompt_tuning_init="TEXT", prompt_tuning_init_text="a list")
    with pytest.raises(HfxError, match="must be one of RANDOM, SAMPLE_VOCAB, TEXT"):
        hfx.apply(model, "prompt_tuning", prompt_tuning_init="ZEROS")
    bert, _ = tiny_model("bert")
    with pytest.raises(HfxError, match="BertForSequenceClassification is neither"):
        hfx.apply(bert, "prompt_tuning")
    hfx.apply(model, "prompt_tuning", num_virtual_tokens=2)
    with pytest.raises(HfxError, match="already has a prompt"):
        hfx.apply(model, "prompt_tuning", num_virtual_tokens=2)


def test_seq2seq_prompt_reaches_the_encoder_in_generate_and_forward() -> None:
    ours, theirs, tok = pair("t5")
    x = batch(tok, "t5")
    enc = ours.get_encoder()(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    assert enc.last_hidden_state.shape[1] == 4 + x["input_ids"].shape[1]  # the encoder sees the prompt
    given = logits(ours, {**x, "encoder_outputs": enc})  # the cross-attention mask is extended to match
    assert (given - logits(theirs, x)).abs().max() <= 1e-5
