"""smollm2-135m (pad = EOS = <|im_end|>) and minilm as reward backbones; slow: real models.

Reference: each text scored alone and unpadded (the last position is then the last real token).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hfx
from hfx.models.loading import load_model
from hfx_plugins.reward import load_rankings, score_texts

pytestmark = pytest.mark.slow


def _texts() -> list[str]:
    row = load_rankings("rankings", "test")[0]
    return [row["prompt"] + c for c in row["completions"]]


def test_smollm2_pad_is_eos_and_scores_match_alone_and_in_transformers(tmp_path) -> None:
    model, tok = load_model("smollm2-135m", "base")
    assert tok.pad_token_id == tok.eos_token_id  # the case transformers' pooling gets wrong
    model = hfx.apply(model, "reward")
    texts = _texts()
    alone = torch.cat([score_texts(model, tok, [t], batch_size=1) for t in texts])
    for side in ("left", "right"):
        tok.padding_side = side
        torch.testing.assert_close(score_texts(model, tok, texts), alone, atol=1e-4, rtol=0)
    from hfx_plugins.reward.io import save

    save(model, tmp_path / "rm", tokenizer=tok)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert hf_tok.pad_token == "<|endoftext|>"
    enc = hf_tok([t + hf_tok.eos_token for t in texts], padding=True, return_tensors="pt", add_special_tokens=True)
    with torch.no_grad():
        torch.testing.assert_close(hf(**enc).logits[:, 0], alone, atol=1e-4, rtol=0)


def test_minilm_reward_model_scores_decoded_policy_text(caplog) -> None:
    model, tok = load_model("minilm", "base")
    _, policy_tok = load_model("smollm2-135m", "base")
    model = hfx.apply(model, "reward")
    with caplog.at_level("WARNING", logger="hfx.reward"):
        scores = score_texts(model, tok, _texts(), policy_tokenizer=policy_tok)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert "differs from the policy's" in caplog.text
