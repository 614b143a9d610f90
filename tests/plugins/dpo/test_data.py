"""DPO pairs from rankings, and tokenization/batching against trl 1.16's own (DataCollatorForPreference)."""

from __future__ import annotations

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_tokenizer
from hfx_plugins.dpo import collate_pairs, preference_pairs, tokenize_pair

ROWS = [
    {"prompt": "p0 ", "completions": ["a", "b", "c"], "ranking": [1, 0, 2]},
    {"prompt": "p1 ", "completions": ["d", "e", "f", "g"], "ranking": [0, 0, 1, 2], "ties": True},
]


def test_all_pairs_are_rankings_to_pairs() -> None:
    assert preference_pairs(ROWS, "all") == hfx.rankings_to_pairs(ROWS)
    assert len(preference_pairs(ROWS, "all")) == 3 + 5  # C(3,2); C(4,2) minus the tied pair


def test_best_vs_worst_pairs_every_tied_best_with_the_worst() -> None:
    got = preference_pairs(ROWS, "best_vs_worst")
    assert [(p["chosen"], p["rejected"]) for p in got] == [("b", "c"), ("d", "g"), ("e", "g")]
    assert got[0]["prompt"] == "p0 "


def test_pairwise_rows_pass_through() -> None:
    rows = [{"prompt": "q ", "chosen": "yes", "rejected": "no"}]
    assert preference_pairs(rows, "best_vs_worst") == rows


def test_ties_are_one_line_errors() -> None:
    undeclared = [{"prompt": "p", "completions": ["a", "b"], "ranking": [0, 0]}]
    with pytest.raises(HfxError, match="set ties: true"):
        preference_pairs(undeclared)
    all_tied = [ROWS[0], {"prompt": "p", "completions": ["a", "b"], "ranking": [1, 1], "ties": True}]
    with pytest.raises(HfxError, match="ranking row 1: every completion shares rank 1.*drop the row") as err:
        preference_pairs(all_tied, "best_vs_worst")
    assert "\n" not in str(err.value)


def test_tokenization_and_batch_equal_trls() -> None:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    tok = tiny_tokenizer("llama")
    items = [tokenize_pair(tok, "the function returns", " a value", " the list of names"),
             tokenize_pair(tok, "a class", " has methods</s>", " none")]
    # trl: EOS appended when missing, BOS from the tokenizer, completion after the common prefix
    eos, bos = tok.eos_token_id, tok.bos_token_id
    assert items[0]["prompt_ids"][0] == bos and items[0]["chosen_ids"][-1] == eos
    assert items[1]["chosen_ids"].count(eos) == 1  # already ended with EOS: not doubled
    ours = collate_pairs(items, tok.pad_token_id)
    theirs = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(items)
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours[key], theirs[key]), key
    short = collate_pairs(items, tok.pad_token_id, max_length=5)
    trl_short = DataCollatorForPreference(pad_token_id=tok.pad_token_id, max_length=5)(items)
    assert torch.equal(short["completion_mask"], trl_short["completion_mask"])


def test_pad_is_never_a_completion_token_even_when_it_is_eos() -> None:
    tok = tiny_tokenizer("llama")
    items = [tokenize_pair(tok, "a", " b c d e", " f"), tokenize_pair(tok, "a", " b", " f g h")]
    batch = collate_pairs(items, pad_token_id=tok.eos_token_id)
    assert batch["completion_mask"].sum().item() == sum(len(i["chosen_ids"]) + len(i["rejected_ids"]) for i in items)
    assert not (batch["completion_mask"].bool() & ~batch["attention_mask"].bool()).any()
