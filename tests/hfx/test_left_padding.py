"""The score head (:class:`hfx.heads.ScoreModel`, i.e. finetune's classifier and reward's model) scores a
left-padded row as the row alone, on absolute (GPT-2) and rotary (Llama) positions.

Independent source: the same head run on each text alone, unpadded (batch of one, no mask needed). GPT-2 adds
a learned vector per position, so left padding shifts every real token's position unless ``position_ids`` come
from the mask (cumsum - 1), which is what transformers' ``generate`` passes.
"""

from __future__ import annotations

import pytest
import torch

from hfx.testing import tiny_model
from hfx_plugins.finetune.heads import SequenceClassifier
from hfx_plugins.reward.head import RewardModel

TEXTS = ["the value of an object can change", "a class", "each object has an identity a type and a value"]


def _head(family: str, kind: str) -> torch.nn.Module:
    backbone, _ = tiny_model(family, "base", seed=0)
    torch.manual_seed(0)
    head = SequenceClassifier(backbone, 3, "decoder") if kind == "finetune" else RewardModel(backbone)
    return head.eval()


@pytest.mark.parametrize("kind", ["finetune", "reward"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_left_padded_rows_score_as_the_rows_alone(family: str, kind: str) -> None:
    head = _head(family, kind)
    _, tok = tiny_model(family, "base")
    tok.padding_side = "left"
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # some rows really are padded on the left
    with torch.no_grad():
        padded = head(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (3, C)
        alone = torch.cat([head(**tok([t], return_tensors="pt")).logits for t in TEXTS])  # (3, C)
    assert (padded - alone).abs().max() <= 1e-5


def test_given_position_ids_are_kept() -> None:
    head = _head("gpt2", "reward")
    _, tok = tiny_model("gpt2", "base")
    enc = tok(TEXTS[:1], return_tensors="pt")
    shifted = torch.arange(enc["input_ids"].shape[1]).unsqueeze(0) + 5  # (1, T): the caller's own positions
    with torch.no_grad():
        default = head(**enc).logits
        own = head(**enc, position_ids=shifted).logits
    assert (default - own).abs().max() > 1e-6  # the caller's positions are used, not replaced
