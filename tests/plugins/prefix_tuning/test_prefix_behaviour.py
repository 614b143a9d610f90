"""Prefix sizes under grouped-query attention, masks and positions, resuming a projected prefix, and bad input.

Expected values: peft 0.21.2's sizes (token_dim = head_dim x KV heads, utils/other.py) and file layout; the
model's own forward without a prefix-aware caller (a prefix applied twice, through a mask that already covers
it or through explicit position ids, must give the same logits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.prefix_tuning import get_encoder, layer_states
from hfx_plugins.prefix_tuning.checks import batch, logits, pair

TEXT = ["the function returns a new list of values"]


def test_prefix_is_sized_to_the_kv_heads_under_grouped_query_attention() -> None:
    model, tok = tiny_model("llama")  # 4 query heads, 2 KV heads, head_dim 8, 2 layers
    hfx.apply(model, "prefix_tuning", num_virtual_tokens=5)
    enc = get_encoder(model)
    assert (enc.config.token_dim, enc.config.num_attention_heads) == (16, 2)  # peft: head_dim x KV heads
    assert tuple(enc.embedding.weight.shape) == (5, 2 * 2 * 16)
    states = layer_states(enc(), 3, 2, 2, 1, torch.float32)
    assert [tuple(k.shape) for k, _ in states] == [(3, 2, 5, 8)] * 2  # (B, H_kv, n, head_dim) per layer


def test_mask_and_positions_given_or_not_give_the_same_logits() -> None:
    model, tok = tiny_model("llama")
    hfx.apply(model, "prefix_tuning", num_virtual_tokens=3)
    x = dict(tok(TEXT, return_tensors="pt"))
    plain = logits(model, {"input_ids": x["input_ids"]})
    with_mask = logits(model, x)  # (1, T) mask: extended by 3 ones
    full_mask = logits(model, {**x, "attention_mask": torch.ones(1, 3 + x["input_ids"].shape[1], dtype=torch.long)})
    positions = logits(model, {**x, "position_ids": torch.arange(x["input_ids"].shape[1])[None]})  # moved by +3
    for other in (with_mask, full_mask, positions):
        assert (other - plain).abs().max() <= 1e-6
    with pytest.raises(HfxError, match="attention_mask has shape"):
        model(input_ids=x["input_ids"], attention_mask=torch.ones(1, 2, dtype=torch.long))


def test_left_padded_batch_matches_each_row_alone() -> None:
    """A padded row gives the logits it gives alone (mask extended, padding masked), as peft's forward does."""
    model, tok = tiny_model("llama")
    hfx.apply(model, "prefix_tuning", num_virtual_tokens=3)
    tok.padding_side = "left"
    texts = ["the function returns a new list of values", "a class"]
    x = dict(tok(texts, padding=True, return_tensors="pt"))
    both = logits(model, {**x, "position_ids": (x["attention_mask"].cumsum(-1) - 1).clamp(min=0)})
    alone = logits(model, dict(tok(texts[1:], return_tensors="pt")))
    assert (both[1, -alone.shape[1]:] - alone[0]).abs().max() <= 1e-5


def test_projected_prefix_resumes_training_after_hfx_load(tmp_path: Path) -> None:
    ours, _, tok = pair("llama", prefix_projection=True, encoder_hidden_size=12)
    x = batch(tok, "llama")
    hfx.save(ours, tmp_path)
    loaded = hfx.load(tiny_model("llama")[0], tmp_path)
    enc = get_encoder(loaded)
    assert enc.prefix_projection and enc.config.encoder_hidden_size == 12  # the MLP is back, trainable
    assert all(p.requires_grad for p in enc.parameters())
    for (k, a), b in zip(get_encoder(ours).state_dict().items(), enc.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert (logits(loaded, x) - logits(ours, x)).abs().max() <= 1e-6


def test_peft_saved_projected_prefix_loads_as_its_flat_output(tmp_path: Path) -> None:
    ours, theirs, tok = pair("gpt2", prefix_projection=True)
    theirs.save_pretrained(tmp_path)  # peft writes the MLP's output only (a known peft limitation)
    loaded = hfx.load(tiny_model("gpt2")[0], tmp_path)
    assert not get_encoder(loaded).prefix_projection
    x = batch(tok, "gpt2")
    assert (logits(loaded, x) - logits(theirs, x)).abs().max() <= 1e-5


def test_prefix_of_other_shapes_names_the_layer_and_both_shapes(tmp_path: Path) -> None:
    ours, _, _ = pair("llama")
    hfx.save(ours, tmp_path)
    _, tok = tiny_model("llama")
    other = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=64, max_position_embeddings=128))
    with pytest.raises(HfxError, match=r"\(2, 2, 8\).*model.layers.0.self_attn has \(2, 4, 8\)"):
        hfx.load(other, tmp_path)
    assert not hasattr(other, "prefix_encoder")


def test_bad_input_is_one_line_errors(tmp_path: Path) -> None:
    model, _ = tiny_model("llama")
    for n in (0, -3):
        with pytest.raises(HfxError, match="num_virtual_tokens must be a positive integer") as err:
            hfx.apply(model, "prefix_tuning", num_virtual_tokens=n)
        assert "\n" not in str(err.value)
    with pytest.raises(HfxError, match=r"prefix_tuning.template is a field of `hfx run`"):
        hfx.apply(model, "prefix_tuning", template="Review: {text}")
    with pytest.raises(HfxError, match="init_weights must be 'zero'"):
        hfx.apply(model, "prefix_tuning", init_weights="gaussian")
    bert, _ = tiny_model("bert")
    with pytest.raises(HfxError, match="decoder language models .* and encoder-decoder models"):
        hfx.apply(bert, "prefix_tuning")
    ours, _, _ = pair("llama")
    hfx.save(ours, tmp_path)
    (tmp_path / "adapter_model.safetensors").rename(tmp_path / "adapter_model.bin")
    with pytest.raises(HfxError, match="a pickle"):
        hfx.load(tiny_model("llama")[0], tmp_path)


def test_gradient_checkpointing_is_refused_clearly() -> None:
    model, tok = tiny_model("llama")
    model.gradient_checkpointing_enable()
    with pytest.raises(HfxError, match="gradient checkpointing"):
        hfx.apply(model, "prefix_tuning")
    model, tok = tiny_model("llama")
    hfx.apply(model, "prefix_tuning", num_virtual_tokens=2)
    model.gradient_checkpointing_enable()  # switched on after the prefix: refused at the first training step
    model.train()
    with pytest.raises(HfxError, match="gradient_checkpointing_disable"):
        model(**tok(TEXT, return_tensors="pt"))


def test_unexpected_tensor_is_refused(tmp_path: Path) -> None:
    ours, _, _ = pair("gpt2")
    hfx.save(ours, tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    save_file({**tensors, "base_model.model.lm_head.weight": torch.zeros(2)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(HfxError, match="unexpected tensor 'base_model.model.lm_head.weight'"):
        hfx.load(tiny_model("gpt2")[0], tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
