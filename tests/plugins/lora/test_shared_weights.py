"""LoRA over tied weights: merging into an output layer tied to the embeddings is refused by name (it would
change the embeddings too: logits 11 off on tiny GPT-2); untied, the merged model equals the unmerged one.
Independent source: the forward of the unmerged adapter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.lora import merge_adapter, merge_and_unload

IDS = torch.tensor([[5, 6, 7, 8]])


def _adapted(untie: bool) -> nn.Module:
    model, _ = tiny_model("gpt2", "causal-lm", seed=0)
    assert model.lm_head.weight is model.transformer.wte.weight  # GPT-2 ties its output layer
    if untie:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    model = hfx.apply(model, "lora", r=4, target_modules=["lm_head", "c_attn"])
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model


def test_merge_into_a_tied_output_layer_is_refused_and_changes_nothing() -> None:
    model = _adapted(untie=False)
    with torch.no_grad():
        before = model(IDS).logits
    with pytest.raises(HfxError, match="merge LoRA into 'lm_head.base_layer.weight'.*shared with 'transformer.wte.weight'"):
        merge_adapter(model)
    with pytest.raises(HfxError, match="tied weights"):
        merge_and_unload(model)
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, before)


def test_untied_merge_equals_the_unmerged_adapter() -> None:
    model = _adapted(untie=True)
    with torch.no_grad():
        before = model(IDS).logits
        merged = merge_and_unload(model)
        assert torch.allclose(merged(IDS).logits, before, atol=1e-4)


def test_modules_to_save_on_a_tied_module_is_refused_by_name() -> None:
    model, _ = tiny_model("gpt2", "causal-lm", seed=0)
    with pytest.raises(HfxError, match="modules_to_save.*'transformer.wte.weight'.*shared with 'lm_head.weight'"):
        hfx.apply(model, "lora", r=4, target_modules=["c_attn"], modules_to_save=["wte"])
    assert model.lm_head.weight is model.transformer.wte.weight  # left as it was
    assert not [n for n, _ in model.named_modules() if "lora_" in n]  # nothing injected before the refusal
