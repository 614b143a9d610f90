"""Every bad input to hfx.apply(model, "lora", ...) is one actionable HfxError line, raised before the model is changed.

(Loading onto a base of other shapes and merging twice are tested with loading and merging, in
test_lora_io.py and test_lora_ops.py.)"""

from __future__ import annotations

import pytest

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model


def _untouched(model) -> bool:
    return not any("lora" in k for k in model.state_dict()) and not hasattr(model, "hfx_lora")


@pytest.mark.parametrize(("fields", "message"), [
    ({"r": 0}, r"lora\.r must be a positive integer \(the rank of B @ A\), got 0"),
    ({"r": -4}, r"lora\.r must be a positive integer"),
    ({"lora_dropout": 1.0}, r"lora\.lora_dropout must be in \[0, 1\)"),
    ({"bias": "some"}, r"lora\.bias must be one of none, all, lora_only"),
    ({"target_modules": []}, r"lora\.target_modules is an empty list"),
    ({"init_lora_weights": "pissa"}, r"'pissa' \(a data- or SVD-based init\) is not implemented in hfx"),
    ({"adapter_name": "my.adapter"}, r"lora\.adapter_name 'my\.adapter' is invalid"),
    ({"loraplus_lr_ratio": 0.5}, r"lora\.loraplus_lr_ratio must be 0 \(off\) or >= 1"),
    ({"rank_pattern": {"q_proj": 0}}, r"lora\.rank_pattern\['q_proj'\] must be a positive integer"),
    ({"lora_rank": 8}, r"unknown config field lora\.'lora_rank'.*fields of LoraConfig: r, lora_alpha"),
])
def test_bad_config_values(fields: dict, message: str) -> None:
    model, _ = tiny_model("llama")
    with pytest.raises(HfxError, match=message):
        hfx.apply(model, "lora", **fields)
    assert _untouched(model)


def test_rank_larger_than_the_layer_allows_names_the_layer() -> None:
    model, _ = tiny_model("llama")  # q_proj is 32 x 32, v_proj 32 -> 16 (two KV heads of 8)
    with pytest.raises(HfxError, match=r"lora\.r=20 is larger than layer 'model\.layers\.0\.self_attn\.v_proj' allows "
                                       r"\(32 in, 16 out: B @ A has rank at most 16\)"):
        hfx.apply(model, "lora", r=20, target_modules=["q_proj", "v_proj"])
    assert _untouched(model)  # q_proj of layer 0 fits, but nothing was injected before the check failed


def test_no_matching_module_lists_the_candidates() -> None:
    model, _ = tiny_model("llama")
    with pytest.raises(HfxError, match=r"no layer of LlamaForCausalLM matches lora\.target_modules=\['qproj'\] "
                                       r"\(did you mean 'q_proj'\?\); layers that can take LoRA: embed_tokens, q_proj, "
                                       r"k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"):
        hfx.apply(model, "lora", target_modules=["qproj"])
    with pytest.raises(HfxError, match=r"every match is excluded by exclude_modules"):
        hfx.apply(model, "lora", target_modules=["q_proj"], exclude_modules=["q_proj"])
    with pytest.raises(HfxError, match=r"matches 'model\.layers\.0\.self_attn' \(LlamaAttention\), which LoRA cannot "
                                       r"adapt"):
        hfx.apply(model, "lora", target_modules=["self_attn"])
    with pytest.raises(HfxError, match=r"modules_to_save names 'clasifier', but LlamaForCausalLM has no such module"):
        hfx.apply(model, "lora", target_modules=["q_proj"], modules_to_save=["clasifier"])
    assert _untouched(model)


def test_adapter_name_already_in_use() -> None:
    model, _ = tiny_model("gpt2")
    hfx.apply(model, "lora", r=4)  # GPT-2's default target: c_attn
    with pytest.raises(HfxError, match=r"adapter name 'default' is already in use on this model \(adapters: "
                                       r"default\); pass another adapter_name"):
        hfx.apply(model, "lora", r=4)


def test_default_targets_when_unset_and_an_error_for_unknown_architectures() -> None:
    from transformers import BioGptConfig, BioGptForCausalLM

    model, _ = tiny_model("t5")
    hfx.apply(model, "lora", r=2)  # T5: q and v, as in peft's table
    assert {k.split(".")[-4] for k in model.state_dict() if "lora_A" in k} == {"q", "v"}
    # biogpt is in neither peft's default table nor hfx's (gptj, refused here before, now takes peft's default)
    odd = BioGptForCausalLM(BioGptConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                         intermediate_size=64, vocab_size=64, max_position_embeddings=32))
    with pytest.raises(HfxError, match=r"no default for model type 'biogpt'; set it, e.g\. lora\.target_modules=\[\.\.\.\] "
                                       r"from: embed_tokens, embed_positions, k_proj, v_proj, q_proj"):
        hfx.apply(odd, "lora")


def test_run_only_field_is_refused_by_apply_naming_hfx_run() -> None:
    # lora.merge belongs to LoraRunConfig (what `hfx run` does on save); hfx.apply takes LoraConfig only, and the
    # check (hfx.registry.Plugin.make_config) runs before the model is touched.
    model, _ = tiny_model("llama")
    with pytest.raises(HfxError) as err:
        hfx.apply(model, "lora", r=4, merge=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith("lora.merge is a field of `hfx run`")
    assert "lora.merge=..." in message  # where to set it instead
    assert _untouched(model)
