"""prompt_tuning against peft 0.21.2 (the installed reference) on tiny Llama, GPT-2 and T5 models.

Expected values: what peft computes for the same prompt (peft's decoder logits include the n virtual
positions, which hfx drops, so they are compared from position n); for generation, argmax decoding by plain
forward passes of the same prompted model (hfx_plugins.prompt_learning.greedy_by_forward)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import hfx
from hfx.data.collate import IGNORE_INDEX
from hfx.parity import train_losses
from hfx.testing import tiny_model
from hfx_plugins.prompt_tuning import get_encoder
from hfx_plugins.prompt_tuning.checks import (
    TASKS,
    N,
    batch,
    generation_mismatch,
    init_gap,
    logits,
    pair,
    peft_to_hfx,
    start,
    training_gap,
)

FAMILIES = ["llama", "gpt2", "t5"]


@pytest.mark.parametrize("init", ["RANDOM", "SAMPLE_VOCAB", "TEXT"])
def test_initial_prompt_equals_peft(init: str) -> None:
    assert init_gap("llama", init) == 0.0  # same seed, same draws in the same order


def test_text_init_repeats_the_text_tokens() -> None:
    """TEXT init: the text's token embeddings (special tokens kept), repeated to n rows (peft's rule)."""
    model, tok = tiny_model("llama")
    hfx.apply(model, "prompt_tuning", num_virtual_tokens=7, prompt_tuning_init="TEXT",
              prompt_tuning_init_text="a list", tokenizer=tok)
    ids = tok("a list")["input_ids"]  # <s> a list: 3 ids
    want = model.get_input_embeddings().weight[(ids * 3)[:7]]
    assert torch.equal(get_encoder(model).embedding.weight, want)


@pytest.mark.parametrize(("family", "init"), [("llama", "RANDOM"), ("gpt2", "TEXT"), ("t5", "SAMPLE_VOCAB")])
def test_hfx_saved_prompt_loads_in_peft_without_warning(family: str, init: str, tmp_path: Path) -> None:
    from peft import PeftModel

    ours, theirs, tok = pair(family, prompt_tuning_init=init)
    x = batch(tok, family)
    got = logits(ours, x)
    assert got.shape[1] == (5 if family == "t5" else x["input_ids"].shape[1])  # aligned with the real tokens
    assert (got - logits(theirs, x, start(family))).abs().max() <= 1e-5
    out = tmp_path / "prompt"
    hfx.save(ours, out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["task_type"] == TASKS[family] and cfg["inference_mode"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (missing or unexpected keys) fails the test
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' own deprecations
        loaded = PeftModel.from_pretrained(tiny_model(family)[0], out)
    assert loaded.prompt_encoder.default.embedding.weight.shape == (N * (2 if family == "t5" else 1), 32)
    assert (logits(loaded, x, start(family)) - got).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_saved_prompt_loads_in_hfx(family: str) -> None:
    assert peft_to_hfx(family) <= 1e-5


@pytest.mark.parametrize("family", [  # gpt2 and t5 also run in `hfx validate plugin=prompt_tuning`
    "llama", pytest.param("gpt2", marks=pytest.mark.slow), pytest.param("t5", marks=pytest.mark.slow)])
def test_twenty_training_steps_match_peft(family: str) -> None:
    assert training_gap(family) <= 1e-4


def test_labels_give_peft_loss_and_training_moves_it() -> None:
    ours, theirs, tok = pair("llama", dropout=0.0)
    x = batch(tok, "llama")
    x["labels"] = x["input_ids"].masked_fill(x["attention_mask"] == 0, IGNORE_INDEX)
    with torch.no_grad():
        assert abs(ours(**x).loss.item() - theirs(**x).loss.item()) <= 1e-6  # virtual positions get IGNORE_INDEX in both
    losses = train_losses(ours, x, steps=20, lr=1e-1)  # AdamW on the trainable parameters: the encoder's only
    assert losses[-1] < losses[0] - 0.05  # nats; a random tiny model sits near ln(1024) = 6.93


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generate_uses_the_prompt(family: str) -> None:
    ours, _, tok = pair(family)
    assert generation_mismatch(ours, tok, family) == 0.0
    x = dict(tok(["the function returns a new list of values"], return_tensors="pt"))
    with torch.no_grad():
        prompted = ours.generate(**x, max_new_tokens=8, do_sample=False)
        get_encoder(ours).injector.enabled = False  # what a dropped prompt would give: the check would see it
        plain = ours.generate(**x, max_new_tokens=8, do_sample=False)
    assert not torch.equal(prompted, plain)
