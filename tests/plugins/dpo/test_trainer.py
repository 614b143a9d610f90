"""hfx.DPOTrainer against trl 1.16's DPOTrainer (hfx_plugins.dpo.checks), its reference and its bad input.

Expected values: trl's own per-pair losses (its ``compute_loss`` on each pair) and LoRA weights after one
update of the same tiny Llama with the same LoRA initialisation (hfx.testing.reference_twin), trl's reference
being the fresh adapter's base and hfx's the disabled adapter.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import TrainingArguments

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.dpo import DPOConfig, DPOTrainer, collate_pairs, completion_logps, tokenize_pair
from hfx_plugins.dpo.checks import PAIRS, TOL, one_update_diffs


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_one_update_equals_trl(loss_type: str) -> None:
    diffs = one_update_diffs(loss_type)
    assert diffs["moved"] > 1e-2  # the SGD step really moved the adapter: the comparison is not vacuous
    assert diffs["losses"] <= TOL and diffs["weights"] <= TOL, diffs


def test_hfx_exports_the_trainer() -> None:
    assert hfx.DPOTrainer is DPOTrainer


def _args(tmp_path) -> TrainingArguments:  # noqa: ANN001
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=1,
                             per_device_train_batch_size=2, save_strategy="no", disable_tqdm=True)


def test_a_policy_without_adapter_is_a_one_line_error(tmp_path) -> None:  # noqa: ANN001
    model, tok = tiny_model("llama")
    with pytest.raises(HfxError, match="has none: apply one first.*or pass ref_model=") as err:
        DPOTrainer(model, _args(tmp_path), train_dataset=PAIRS, processing_class=tok)
    assert "\n" not in str(err.value)


def test_explicit_reference_model(tmp_path) -> None:  # noqa: ANN001
    model, tok = tiny_model("llama")
    ref = copy.deepcopy(model)
    trainer = DPOTrainer(model, _args(tmp_path), train_dataset=PAIRS, processing_class=tok, ref_model=ref,
                         dpo_config=DPOConfig(beta=0.2))
    batch = collate_pairs(list(trainer.train_dataset), tok.pad_token_id)
    loss, parts = trainer.dpo_loss(model, batch)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)  # policy == reference
    trainer.train()
    assert any((a - b).abs().max() > 0 for a, b in zip(model.parameters(), ref.parameters(), strict=True))


def test_ranking_rows_and_reward_metrics(tmp_path) -> None:  # noqa: ANN001
    model, tok = tiny_model("llama")
    model = hfx.apply(model, "lora", r=2)
    rows = [{"prompt": "the value ", "completions": ["is one", "is two", "is none"], "ranking": [2, 0, 1]}]
    trainer = DPOTrainer(model, _args(tmp_path), train_dataset=rows, processing_class=tok, pairs="best_vs_worst")
    assert len(trainer.train_dataset) == 1
    trainer.train()
    logged = [r for r in trainer.state.log_history if "rewards/accuracies" in r]
    assert logged and {"rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(logged[0])


def test_completion_logps_ignore_padding_and_prompt() -> None:
    model, tok = tiny_model("llama")
    model.eval()
    short = tokenize_pair(tok, "a class", " has", " none")
    long = tokenize_pair(tok, "the function returns", " a value for the list", " the names of data")
    with torch.no_grad():
        alone = completion_logps(model, collate_pairs([short], tok.pad_token_id))  # (2,)
        padded = completion_logps(model, collate_pairs([short, long], tok.pad_token_id))  # (4,) short rows padded
    assert torch.allclose(alone, padded[[0, 2]], atol=1e-5)
