"""Merging, several adapters, the disabled-adapter context, weighted combinations and LoRA+, each against
what peft (installed version) computes for the same adapters on the same tiny model."""

from __future__ import annotations

import warnings

import pytest
import torch
from lora_helpers import batch, logits, lora_tensors, pair, randomize

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.lora import (
    LoraLayer,
    add_weighted_adapter,
    disable_adapters,
    loraplus_param_groups,
    merge_adapter,
    merge_and_unload,
    set_adapter,
    unmerge_adapter,
)


@pytest.mark.parametrize(("family", "variant"), [("llama", {"use_dora": True}), ("gpt2", {}),
                                                 ("llama", {"target_modules": ["embed_tokens", "q_proj"], "use_dora": True})])
def test_merge_unmerge_and_merge_and_unload(family: str, variant: dict) -> None:
    ours, theirs, tok = pair(family, r=4, lora_alpha=8, **variant)
    randomize(ours, theirs)
    inputs = batch(tok, family)
    adapted = logits(ours, inputs)
    merge_adapter(ours)
    assert (logits(ours, inputs) - adapted).abs().max() <= 1e-5  # merged weights compute the same function
    with pytest.raises(HfxError, match="already merged"):
        merge_adapter(ours)  # merging twice would add the update twice
    unmerge_adapter(ours)
    assert (logits(ours, inputs) - adapted).abs().max() <= 1e-5
    plain = merge_and_unload(ours)
    assert type(plain).__name__ == type(tiny_model(family)[0]).__name__
    assert not any(isinstance(m, LoraLayer) for m in plain.modules()) and not hasattr(plain, "hfx_lora")
    assert set(plain.state_dict()) == set(tiny_model(family)[0].state_dict())  # a plain transformers model
    expected = logits(theirs.merge_and_unload(), inputs)  # peft's merged model
    assert (logits(plain, inputs) - expected).abs().max() <= 1e-5


def test_several_adapters_switching_and_disabled_base() -> None:
    ours, theirs, tok = pair("llama", r=4)
    base_out = logits(tiny_model("llama")[0], batch(tok, "llama"))
    hfx.apply(ours, "lora", r=2, target_modules=["k_proj", "v_proj"], adapter_name="second")
    with pytest.raises(HfxError, match="adapter name 'second' is already in use"):
        hfx.apply(ours, "lora", r=2, adapter_name="second")
    randomize(ours)
    inputs = batch(tok, "llama")
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable and all(".second." in n for n in trainable)  # only the active adapter trains
    out_second = logits(ours, inputs)
    set_adapter(ours, "default")
    out_default = logits(ours, inputs)
    assert (out_default - out_second).abs().max() > 1e-3
    merge_adapter(ours)
    with disable_adapters(ours):  # the frozen base, without a second copy: merged weights are taken out
        assert (logits(ours, inputs) - base_out).abs().max() <= 1e-5
    assert (logits(ours, inputs) - out_default).abs().max() <= 1e-5  # and put back
    with pytest.raises(HfxError, match="no adapter named 'third' on this model; adapters: default, second"):
        set_adapter(ours, "third")


@pytest.mark.parametrize("combination_type", ["linear", "cat"])
def test_weighted_adapter_matches_peft(combination_type: str) -> None:
    ours, theirs, tok = pair("llama", r=4, lora_alpha=8)
    from peft import LoraConfig

    torch.manual_seed(3)
    hfx.apply(ours, "lora", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], adapter_name="b")
    torch.manual_seed(3)
    theirs.add_adapter("b", LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    randomize(ours, theirs)
    add_weighted_adapter(ours, ["default", "b"], [0.7, -0.4], "mix", combination_type=combination_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.add_weighted_adapter(["default", "b"], [0.7, -0.4], "mix", combination_type=combination_type)
    set_adapter(ours, "mix")
    theirs.set_adapter("mix")
    mine = {k: v for k, v in lora_tensors(ours).items() if ".mix." in k}
    assert mine.keys() == {k for k in lora_tensors(theirs) if ".mix." in k}
    for key, value in mine.items():
        torch.testing.assert_close(value, lora_tensors(theirs)[key], rtol=1e-6, atol=1e-7)
    inputs = batch(tok, "llama")
    assert (logits(ours, inputs) - logits(theirs, inputs)).abs().max() <= 1e-5


def test_loraplus_groups_match_peft() -> None:
    from peft.optimizers import create_loraplus_optimizer

    ours, theirs, _ = pair("llama", r=4, use_dora=True, target_modules=["embed_tokens", "q_proj", "v_proj"],
                           bias="all")
    groups = loraplus_param_groups(ours, lr=1e-3, loraplus_lr_ratio=16)
    ref = create_loraplus_optimizer(theirs, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16).param_groups
    assert [(g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"])) for g in groups] == [
        (g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"])) for g in ref]
    assert groups[2]["lr"] == 16e-3  # B learns 16x faster than A


def test_still_a_transformers_model_for_trainer(tmp_path) -> None:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model, tok = tiny_model("llama")
    model = hfx.apply(model, "lora", r=4, target_modules=["q_proj", "v_proj"])
    rows = batch(tok, "llama")
    data = Dataset.from_dict({k: v.tolist() for k, v in rows.items()})
    args = TrainingArguments(tmp_path, max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                             save_strategy="no", learning_rate=1e-2, disable_tqdm=True)
    before = lora_tensors(model)["model.layers.0.self_attn.q_proj.lora_B.default.weight"].clone()
    Trainer(model=model, args=args, train_dataset=data).train()
    assert (lora_tensors(model)["model.layers.0.self_attn.q_proj.lora_B.default.weight"] - before).abs().max() > 0
