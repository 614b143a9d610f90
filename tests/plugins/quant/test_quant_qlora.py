"""QLoRA: ``plugin=[quant,lora]`` trains adapters on a frozen 4-bit base; merging requantizes and reports its error."""

from __future__ import annotations

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.quant.layer import QuantLinear
from hfx_plugins.quant.qlora import merge_lora


def test_lora_on_quantized_base_trains_and_merges_with_reported_error() -> None:
    model, tok = tiny_model("llama", "causal-lm", seed=0)
    model = hfx.apply(model, "quant", bits=4, group_size=16)
    model = hfx.apply(model, "lora", r=4, lora_alpha=8.0, target_modules="all-linear")
    wrapped = [m for m in model.modules() if isinstance(getattr(m, "base_layer", None), QuantLinear)]
    assert len(wrapped) == 14  # 2 layers x (q, k, v, o, gate, up, down): LoRA wraps every QuantLinear
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "qweight" in k or "scales" in k}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    enc = tok(["the function returns a new list and the class defines its methods"], return_tensors="pt")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(input_ids=enc["input_ids"], labels=enc["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())  # the base never moved
    with pytest.raises(HfxError, match="dequantized copy"):
        with torch.no_grad():  # what an in-place LoRA merge into base_layer.weight does: caught, not lost
            wrapped[0].base_layer.weight.data.copy_(torch.zeros(1))
    model.eval()
    with torch.no_grad():
        before = model(input_ids=enc["input_ids"]).logits
        merged, report = merge_lora(model)
        after = merged(input_ids=enc["input_ids"]).logits
    assert not any(hasattr(m, "lora_A") for m in merged.modules())
    assert len(report) == 14 and all(r["update_norm"] > 0 and r["merge_error"] > 0 for r in report)
    # Requantizing adds error of the order of half a quantization step per weight; it is reported, and the
    # merged model stays close to the adapter model (not equal: that is the point of the report).
    assert 0 < (after - before).abs().max() < 0.5 * before.abs().max()


def test_qlora_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model("llama", "causal-lm", seed=0)
    model = hfx.apply(model, "quant", bits=4, group_size=16)
    model = hfx.apply(model, "lora", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # a non-zero update, so a lost adapter would show
        enc = tok(["the function returns a new list"], return_tensors="pt")
        ref = model.eval()(input_ids=enc["input_ids"]).logits
    hfx.save(model, tmp_path / "qlora")  # quant/ (packed base) and lora/ (peft format) sub-folders
    assert sorted(p.name for p in (tmp_path / "qlora").iterdir()) == ["hfx_plugins.json", "lora", "quant"]
    loaded = hfx.load(tiny_model("llama", "causal-lm", seed=5)[0], tmp_path / "qlora")
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=enc["input_ids"]).logits, ref)
