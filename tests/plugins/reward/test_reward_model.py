"""The reward head: pooling at the last real token, hfx.apply, save/load and transformers' loader.

Expected numbers come from the model itself: a text scored alone, unpadded (no pooling choice to make: the
last position is the last real token), is the reference for every padded / pad-id variant.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.reward import last_real_index, score_texts

TEXTS = ["the value is returned", "a list of the names of the module and the class", "none"]


def _reward(family: str = "llama", seed: int = 0):
    model, tok = tiny_model(family, "base", seed)
    return hfx.apply(model, "reward"), tok


def _alone(model, tok) -> torch.Tensor:
    """Each text scored on its own: batch of one, no padding."""
    return torch.cat([score_texts(model, tok, [t], batch_size=1) for t in TEXTS])


def test_last_real_index_left_and_right() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_real_index(mask).tolist() == [2, 4, 4]  # hand-counted positions


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pad", ["distinct", "eos", "unset"])
def test_score_is_read_at_last_real_token(side: str, pad: str) -> None:
    model, tok = _reward()
    ref = _alone(model, tok)
    tok.padding_side = side
    if pad == "eos":
        tok.pad_token = tok.eos_token  # the EOS that ends each text is also the pad
        model.config.pad_token_id = tok.eos_token_id
    elif pad == "unset":
        tok.pad_token = None
        model.config.pad_token_id = None
    batched = score_texts(model, tok, TEXTS, batch_size=3)
    torch.testing.assert_close(batched, ref, atol=1e-5, rtol=0)


def test_causal_lm_and_backbone_give_the_same_reward_model() -> None:
    lm, tok = tiny_model("llama", "causal-lm", 0)
    base, _ = tiny_model("llama", "base", 0)
    a, b = hfx.apply(lm, "reward"), hfx.apply(base, "reward")
    b.score.load_state_dict(a.score.state_dict())
    torch.testing.assert_close(score_texts(a, tok, TEXTS), score_texts(b, tok, TEXTS))
    assert not hasattr(a, "lm_head")


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_saved_model_loads_in_transformers_with_the_same_scores(tmp_path, family: str) -> None:
    model, tok = _reward(family)
    with torch.no_grad():
        model.head.weight.normal_()
    model.shift = 0.0 if family == "llama" else model.shift
    hfx.save(model, tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    assert hf.config.num_labels == 1
    assert hf.config.pad_token_id != tok.eos_token_id or tok.eos_token_id is None
    ref = _alone(model, tok)
    ids = [tok(t)["input_ids"] + ([tok.eos_token_id] if tok.eos_token_id is not None else []) for t in TEXTS]
    with torch.no_grad():
        got = torch.cat([hf(input_ids=torch.tensor([x])).logits[:, 0] for x in ids])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    back = hfx.load(tiny_model(family, "base", 1)[0], tmp_path / "rm")  # other random weights, all replaced
    # scores of ~10 after the head is redrawn: float32 summation order (thread count) moves them by ~1e-6
    torch.testing.assert_close(score_texts(back, tok, TEXTS), ref, atol=1e-5, rtol=0)


def test_saved_tokenizer_pads_with_a_token_that_is_not_eos(tmp_path) -> None:
    """With pad = EOS, save writes another pad token so transformers' batched pooling is right too."""
    model, tok = _reward()
    tok.pad_token = tok.eos_token
    ref = _alone(model, tok)
    from hfx_plugins.reward.io import save

    save(model, tmp_path / "rm", tokenizer=tok)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert hf_tok.pad_token_id != hf_tok.eos_token_id == tok.eos_token_id
    enc = hf_tok([t + hf_tok.eos_token for t in TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        got = hf(**enc).logits[:, 0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_shift_is_saved_for_a_decoder(tmp_path) -> None:
    model, tok = _reward()
    model.shift = 0.75
    ref = _alone(model, tok)
    hfx.save(model, tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    assert hf.config.reward_shift == 0.75
    back = hfx.load(tiny_model("llama", "base", 0)[0], tmp_path / "rm")
    torch.testing.assert_close(score_texts(back, tok, TEXTS), ref, atol=1e-6, rtol=0)


def test_trainable_layers_freezes_all_but_the_last_blocks() -> None:
    model, _ = tiny_model("llama", "base", 0)
    model = hfx.apply(model, "reward", trainable_layers=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "score.weight" in trainable and "model.norm.weight" in trainable
    assert any(n.startswith("model.layers.1.") for n in trainable)
    assert not any(n.startswith(("model.layers.0.", "model.embed_tokens")) for n in trainable)


def test_apply_refuses_a_run_only_field() -> None:
    model, _ = tiny_model("llama", "base", 0)
    with pytest.raises(HfxError, match="reward.gold_column is a field of `hfx run`"):
        hfx.apply(model, "reward", gold_column="gold")


def test_long_text_is_cut_with_a_warning(caplog) -> None:
    model, tok = _reward()
    long = " ".join(["the value"] * 100)
    with caplog.at_level("WARNING", logger="hfx.reward"):
        s = score_texts(model, tok, [long], max_length=16)
    assert "longer than the reward model's max_length=16" in caplog.text
    ids = tok(long)["input_ids"][:15] + [tok.eos_token_id]
    torch.testing.assert_close(s, score_texts(model, tok, [tok.decode(ids[1:-1])], max_length=16), atol=1e-5, rtol=0)


def test_nan_score_is_an_error() -> None:
    model, tok = _reward()
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    with pytest.raises(HfxError, match="reward score of text 0 is nan"):
        score_texts(model, tok, TEXTS)
