"""quant on MoE models whose experts transformers 5 fuses into 3-D parameters (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE).

Expected values come from a hand computation: each expert's (out, in) slice quantized on its own, per output
channel, with the affine formula of ``hfx_plugins.quant.affine`` (min/max ranges, ``clip_steps=0``), then
dequantized; and from the plain model (a model whose experts are replaced by those hand-dequantized weights).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers as T

import hfx
from hfx.errors import HfxError
from hfx_plugins.quant.affine import choose_qparams, dequantize, group_ranges, quantize, to_groups
from hfx_plugins.quant.coverage import coverage, coverage_message
from hfx_plugins.quant.experts import PackedExperts, fused_expert_params

SMALL = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             pad_token_id=0, bos_token_id=1, eos_token_id=2)


def moe_config(kind: str) -> T.PretrainedConfig:
    """Tiny configs with each family's structure (4 experts, top-2; Qwen2-MoE's shared expert)."""
    if kind == "mixtral":
        return T.MixtralConfig(**SMALL, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                               architectures=["MixtralForCausalLM"])
    if kind == "qwen2_moe":
        return T.Qwen2MoeConfig(**SMALL, intermediate_size=32, moe_intermediate_size=8, num_experts=4,
                                shared_expert_intermediate_size=16, num_experts_per_tok=2,
                                architectures=["Qwen2MoeForCausalLM"])
    if kind == "qwen3_moe":
        return T.Qwen3MoeConfig(**SMALL, intermediate_size=32, moe_intermediate_size=8, num_experts=4, head_dim=4,
                                num_experts_per_tok=2, architectures=["Qwen3MoeForCausalLM"])
    return T.OlmoeConfig(**SMALL, intermediate_size=8, num_experts=4, num_experts_per_tok=2,
                         architectures=["OlmoeForCausalLM"])


KINDS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]


def tiny_moe(kind: str, seed: int = 0) -> T.PreTrainedModel:
    torch.manual_seed(seed)
    return T.AutoModelForCausalLM.from_config(moe_config(kind)).eval()


def by_hand(w: torch.Tensor, bits: int) -> torch.Tensor:
    """dequantize(quantize(w)) of each expert's (out, in) slice alone, per output channel, min/max range."""
    out = []
    for e in range(w.shape[0]):
        groups, _ = to_groups(w[e].float(), 0)  # (out, 1, in)
        scale, zero = choose_qparams(*group_ranges(groups), bits, False)  # (out, 1, 1) each
        out.append(dequantize(quantize(groups, scale, zero, bits), scale, zero).reshape(w[e].shape))
    return torch.stack(out)  # (E, out, in)


@pytest.mark.parametrize("kind", KINDS)
def test_experts_equal_per_expert_hand_quantization(kind: str) -> None:
    model = tiny_moe(kind)
    paths = fused_expert_params(model)
    assert len(paths) == 2 * 2  # gate_up_proj and down_proj in each of the 2 layers
    originals = {p: model.get_parameter(p).detach().clone() for p in paths}
    ids = torch.randint(3, 64, (2, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hfx.apply(model, "quant", bits=4, group_size=0, clip_steps=0)
    for p, w in originals.items():
        mod, _, name = p.rpartition(".")
        assert isinstance(getattr(model.get_submodule(mod), name + "_packed"), PackedExperts)
        torch.testing.assert_close(getattr(model.get_submodule(mod), name), by_hand(w, 4), rtol=0, atol=0)
    # the plain model with the hand-dequantized experts and the same quantized attention gives the same logits
    plain = tiny_moe(kind)
    with torch.no_grad():
        for p, w in originals.items():
            plain.get_parameter(p).copy_(by_hand(w, 4))
        for n, m in model.named_modules():
            if type(m).__name__ == "QuantLinear":
                plain.get_submodule(n).weight.copy_(m.dequantize())
    torch.testing.assert_close(model(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)


def test_coverage_before_and_after_on_tiny_mixtral() -> None:
    # counted by hand for this config, per layer: attention q, o 16 x 16 and k, v 8 x 16 (2 KV heads of 4);
    # experts 4 x (64 x 16 + 16 x 32); router 4 x 16; once: lm_head 64 x 16
    attn, experts, router, head = 2 * (2 * 16 * 16 + 2 * 8 * 16), 2 * 4 * (64 * 16 + 16 * 32), 2 * 4 * 16, 64 * 16
    total = attn + experts + router + head
    with pytest.warns(UserWarning, match=r"left in full precision: model\.layers\.\*\.mlp\.experts\.gate_up_proj"):
        before = hfx.apply(tiny_moe("mixtral"), "quant", bits=8, group_size=0, exclude_modules=["experts"])
    assert coverage(before)["share"] == pytest.approx(attn / total)  # 10.3%: attention only, as before experts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only the output layer and the routers (0.9%) stay: no warning
        after = hfx.apply(tiny_moe("mixtral"), "quant", bits=8, group_size=0)
    c = coverage(after)
    assert c["share"] == pytest.approx((attn + experts) / total)  # 92.3%
    assert c["left"] == {"lm_head.weight": head, "model.layers.*.mlp.gate.weight": router}
    assert "lm_head.weight" in coverage_message(after)


@pytest.mark.parametrize("kind", ["mixtral", "qwen2_moe"])
def test_save_load_round_trip(kind: str, tmp_path) -> None:
    from hfx_plugins.quant import load_quantized

    model = tiny_moe(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hfx.apply(model, "quant", bits=3, group_size=8)
    ids = torch.randint(3, 64, (2, 9))
    ref = model(ids).logits
    hfx.save(model, tmp_path / "q")
    torch.testing.assert_close(load_quantized(tmp_path / "q")(ids).logits, ref, rtol=0, atol=0)
    torch.testing.assert_close(hfx.load(tiny_moe(kind, seed=1), tmp_path / "q")(ids).logits, ref, rtol=0, atol=0)


def test_refusals_name_the_experts() -> None:
    untouched = tiny_moe("mixtral")
    with pytest.raises(HfxError, match=r"group_size=-1 .*model\.layers\.0\.mlp\.experts\.gate_up_proj"):
        hfx.apply(untouched, "quant", bits=8, group_size=-1)
    assert type(untouched.model.layers[0].self_attn.q_proj) is torch.nn.Linear  # refused before any change
    with pytest.raises(HfxError, match=r"gptq does not quantize fused 3-D expert weights.*experts\.gate_up_proj"):
        hfx.apply(tiny_moe("mixtral"), "quant", method="gptq", calibration=[torch.randint(3, 64, (1, 8))])
    model = tiny_moe("mixtral")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit list of targets is the user's choice: logged, not warned
        hfx.apply(model, "quant", bits=8, group_size=0, target_modules=["down_proj"])
    assert fused_expert_params(model) == [f"model.layers.{i}.mlp.experts.gate_up_proj" for i in range(2)]
    with pytest.raises(HfxError, match="stored as packed integers"):
        model.model.layers[0].mlp.experts.down_proj = torch.zeros(4, 16, 32)
    with pytest.raises(HfxError, match="already quantized"):
        hfx.apply(model, "quant")


def test_lora_all_linear_on_fused_experts_is_refused_where_peft_adapts_them() -> None:
    import peft

    # the reference: peft 0.21's all-linear wraps each layer's experts (ParamWrapper over the 3-D weights)
    wrapped = peft.get_peft_model(tiny_moe("mixtral"), peft.LoraConfig(target_modules="all-linear"))
    kinds = {type(m).__name__ for n, m in wrapped.named_modules() if n.endswith("mlp.experts")}
    assert kinds == {"ParamWrapper"}
    with pytest.raises(HfxError, match=r"all-linear on MixtralForCausalLM: peft also adapts its fused 3-D expert "
                                       r"weights \(model\.layers\.0\.mlp\.experts\.gate_up_proj and 3 more"):
        hfx.apply(tiny_moe("mixtral"), "lora", target_modules="all-linear")
    with pytest.raises(HfxError, match="which LoRA cannot adapt"):
        hfx.apply(tiny_moe("mixtral"), "lora", target_modules=["experts"])
    # the attention layers alone: the same layers as peft with the same list
    ours = hfx.apply(tiny_moe("mixtral"), "lora", target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    ref = peft.get_peft_model(tiny_moe("mixtral"), peft.LoraConfig(target_modules=["q_proj", "k_proj", "v_proj",
                                                                                   "o_proj"]))
    assert sorted(n for n, _ in ours.named_modules() if n.endswith(".lora_A")) == sorted(
        n.removeprefix("base_model.model.") for n, _ in ref.named_modules() if n.endswith(".lora_A"))


def test_transposed_experts_of_gpt_oss() -> None:
    # GPT-OSS stores each expert (in, out) (is_transposed): per output channel is then per column of the slice
    config = T.GptOssConfig(**{**SMALL, "num_attention_heads": 4}, intermediate_size=16, head_dim=4,
                            num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
                            layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config).eval()
    experts = model.model.layers[0].mlp.experts
    assert experts.is_transposed
    w = experts.gate_up_proj.detach().clone()  # (E, in, out)
    # left: lm_head and the routers, which are 1.4% of this tiny model's matmul weights (over 1%: a warning)
    with pytest.warns(UserWarning, match=r"87\.0% .*lm_head\.weight 11\.6%, model\.layers\.\*\.mlp\.router\.weight 1\.4%$"):
        hfx.apply(model, "quant", bits=4, group_size=0, clip_steps=0)
    expected = by_hand(w.transpose(1, 2), 4).transpose(1, 2)  # quantized as (E, out, in), returned (E, in, out)
    torch.testing.assert_close(experts.gate_up_proj, expected, rtol=0, atol=0)
    assert not any(k.endswith("bias") for k in coverage(model)["left"])  # biases are added, not multiplied
