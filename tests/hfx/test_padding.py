"""hfx.data.collate.pad_rows, the one padding routine of hfx's own batches, and IGNORE_INDEX.

Expected values: a transformers tokenizer's own ``pad`` of the same ids (its ``input_ids`` and
``attention_mask``), on both padding sides; PyTorch's ``cross_entropy`` default ``ignore_index``.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from hfx.data.collate import IGNORE_INDEX, pad_rows
from hfx.errors import HfxError
from hfx.testing import tiny_model

ROWS = [[5, 6, 7, 8], [9], [10, 11]]


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_rows_equals_the_tokenizers_pad(side: str) -> None:
    _, tok = tiny_model("llama")
    tok.padding_side = side
    want = tok.pad({"input_ids": ROWS}, return_tensors="pt")
    ids, mask = pad_rows(ROWS, tok.pad_token_id, side)
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])


def test_pad_rows_by_hand_with_a_width() -> None:
    ids, mask = pad_rows(ROWS, IGNORE_INDEX, "left", width=5)
    assert ids.tolist() == [[-100, 5, 6, 7, 8], [-100] * 4 + [9], [-100] * 3 + [10, 11]]
    assert mask.sum(1).tolist() == [4, 1, 2] and ids.dtype == mask.dtype == torch.long


def test_ignore_index_is_pytorchs_default() -> None:
    assert IGNORE_INDEX == inspect.signature(F.cross_entropy).parameters["ignore_index"].default
    assert IGNORE_INDEX == torch.nn.CrossEntropyLoss().ignore_index


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"side": "middle"}, "padding side must be 'right' or 'left'"),
    ({"width": 3}, "a row of 4 entries does not fit a padded width of 3"),
])
def test_pad_rows_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(HfxError, match=message):
        pad_rows(ROWS, 0, **kwargs)
    with pytest.raises(HfxError, match="no rows"):
        pad_rows([], 0)
