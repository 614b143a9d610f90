"""The score of a padded text equals the text scored alone (independent source: the unpadded forward),
for left and right padding, with ``pad_token_id`` unset, set, or equal to EOS (hfx.pooling)."""

from __future__ import annotations

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx.pooling import gather_last, last_token_index
from hfx.testing import tiny_model

TEXTS = ["a b c d e f g h", "a b"]


def _scored(pad_id: str, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    backbone, tok = tiny_model("llama", "base", seed=0)
    if pad_id == "unset":
        backbone.config.pad_token_id = None
        tok.pad_token = tok.eos_token  # the tokenizer pads with EOS, the config knows no pad id
    elif pad_id == "eos":
        backbone.config.pad_token_id = tok.eos_token_id
        tok.pad_token = tok.eos_token
    tok.padding_side = side
    model = hfx.apply(backbone, "finetune", num_labels=1).eval()
    texts = [t + " " + tok.eos_token for t in TEXTS] if pad_id == "eos" else TEXTS  # texts ending in EOS
    with torch.no_grad():
        enc = tok(texts, padding=True, return_tensors="pt")
        batch = model(**enc).logits[:, 0]  # (2,)
        alone = torch.stack([model(**tok([t], return_tensors="pt")).logits[0, 0] for t in texts])  # (2,)
    return batch, alone


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pad_id", ["unset", "set", "eos"])
def test_padded_score_equals_text_alone(pad_id: str, side: str) -> None:
    batch, alone = _scored(pad_id, side)
    assert torch.allclose(batch, alone, atol=1e-5), (batch, alone)


def test_helpers_on_a_hand_made_mask() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]])  # right, left, none
    assert last_token_index(mask).tolist() == [2, 3, 3]
    hidden = torch.arange(3 * 4 * 2, dtype=torch.float).reshape(3, 4, 2)
    assert torch.equal(gather_last(hidden, mask), hidden[[0, 1, 2], [2, 3, 3]])
    with pytest.raises(HfxError, match="row 1 .* no real token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))
