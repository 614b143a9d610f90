"""Usable positions: RoBERTa numbers positions from padding_idx + 1, so a 130-row table at padding index 0
holds 129 tokens. The independent source is the raw transformers model itself: 129 tokens run, 130 raise."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2Model, RobertaConfig, RobertaModel

import hfx
from hfx.errors import HfxError
from hfx.models.limits import max_input_length, position_limit
from hfx.testing import tiny_tokenizer


def _roberta(positions: int = 130, pad: int = 0) -> RobertaModel:
    cfg = RobertaConfig(vocab_size=len(tiny_tokenizer("bert")), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=positions,
                        pad_token_id=pad)
    torch.manual_seed(0)
    return RobertaModel(cfg).eval()


def test_roberta_offset_matches_what_the_model_runs() -> None:
    model = _roberta()
    assert position_limit(model) == 129 and position_limit(model.config) == 129
    ids = torch.full((1, 129), 5)
    model(input_ids=ids)  # 129 tokens run
    with pytest.raises((IndexError, RuntimeError), match="out of (range|bounds)"):
        model(input_ids=torch.full((1, 130), 5))  # the raw failure hfx must never reach
    assert position_limit(_roberta(514, 1)) == 512  # roberta-base's table


def test_gpt2_table_and_tokenizer_limits() -> None:
    gpt2 = GPT2Model(GPT2Config(n_positions=64, n_embd=16, n_layer=1, n_head=2, vocab_size=50))
    assert position_limit(gpt2) == 64
    tok = tiny_tokenizer("bert")
    tok.model_max_length = 32
    assert max_input_length(gpt2, tok) == 32
    with pytest.warns(UserWarning, match="max_length=100 is longer than the model can take .32 tokens"):
        assert max_input_length(gpt2, tok, 100) == 32
    tok.model_max_length = int(1e30)  # a tokenizer saved without a limit does not count
    assert max_input_length(gpt2, tok, 0) == 64


def test_embed_truncates_with_a_warning_instead_of_an_index_error() -> None:
    model, tok = _roberta(), tiny_tokenizer("bert")
    tok.model_max_length = int(1e30)
    text = " ".join(["a"] * 198)
    ids = tok(text)["input_ids"]
    assert len(ids) == 200
    with pytest.warns(UserWarning, match="longer than 129 tokens and were truncated"):
        got = hfx.embed(model, tokenizer=tok, pooling="mean").encode([text])[0]
    cut = tok(text, truncation=True, max_length=129, return_tensors="pt")
    with torch.no_grad():
        want = model(**cut).last_hidden_state[0].mean(0)  # no padding: the plain mean over 129 tokens
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-5)


def test_finetune_head_refuses_past_the_table_in_one_line() -> None:
    head = hfx.apply(_roberta(), "finetune", num_labels=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HfxError, match="longer than the 129 positions .* max_length=129"):
            head(input_ids=torch.full((1, 130), 5))
    assert head(input_ids=torch.full((1, 129), 5)).logits.shape == (1, 2)
