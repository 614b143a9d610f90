"""QLoRA: ``plugin=[quant,lora]`` trains adapters on a frozen 4-bit base; merging requantizes and reports its error."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.lora import LoraLayer, merge_adapter, merge_and_unload, unmerge_adapter
from hfx_plugins.quant import QuantLinear


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
        report = merge_adapter(model)  # one row per quantized base: what requantizing the merge cost
        merged = merge_and_unload(model)  # keeps that merge and unwraps the layers
        after = merged(input_ids=enc["input_ids"]).logits
    assert not any(hasattr(m, "lora_A") for m in merged.modules())
    assert len(report) == 14 and all(r["update_norm"] > 0 and r["merge_error"] > 0 for r in report)
    # Requantizing adds error of the order of half a quantization step per weight; it is reported, and the
    # merged model stays close to the adapter model (not equal: that is the point of the report).
    assert 0 < (after - before).abs().max() < 0.5 * before.abs().max()


def _qlora_q_v(b_std: float) -> tuple[torch.nn.Module, Any]:
    """Tiny Llama, 4-bit base (groups of 16), LoRA r=4 on q_proj/v_proj with B ~ N(0, b_std): a non-zero update."""
    model, tok = tiny_model("llama", "causal-lm", seed=0)
    model = hfx.apply(model, "quant", bits=4, group_size=16)
    model = hfx.apply(model, "lora", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=b_std)
    return model, tok


def test_qlora_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = _qlora_q_v(b_std=1.0)  # a lost adapter would show
    with torch.no_grad():
        enc = tok(["the function returns a new list"], return_tensors="pt")
        ref = model.eval()(input_ids=enc["input_ids"]).logits
    hfx.save(model, tmp_path / "qlora")  # quant/ (packed base) and lora/ (peft format) sub-folders
    assert sorted(p.name for p in (tmp_path / "qlora").iterdir()) == ["hfx_plugins.json", "lora", "quant"]
    loaded = hfx.load(tiny_model("llama", "causal-lm", seed=5)[0], tmp_path / "qlora")
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=enc["input_ids"]).logits, ref)


def test_merge_adapter_on_quantized_base_requantizes_and_reports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = _qlora_q_v(b_std=0.1)
    ids = tok(["the function returns a new list"], return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        unmerged_out = model(input_ids=ids).logits
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    originals = [m.base_layer for m in layers]
    # Expected merge, by hand: W_deq + s B A, requantized with the base's own layout by the clip-search RTN.
    targets = [m.base_layer.dequantize() + m.delta_weight("default") for m in layers]  # (out, in) each
    reports = merge_adapter(model)  # LoraLayer.merge on a QuantLinear base: no longer an error
    assert len(reports) == len(layers) == 4  # 2 layers x (q_proj, v_proj)
    for layer, orig, target, row in zip(layers, originals, targets, reports, strict=True):
        new = layer.base_layer
        assert isinstance(new, QuantLinear) and new is not orig
        assert (new.bits, new.group_size, new.symmetric) == (orig.bits, orig.group_size, orig.symmetric)
        dense = torch.nn.Linear(new.in_features, new.out_features, bias=False)
        dense.weight.data = target.clone()
        assert torch.equal(new.codes(), QuantLinear.from_float(dense, 4, 16, False).codes())
        err = new.dequantize() - target  # what requantizing added
        assert row["max_error"] == pytest.approx(err.abs().max().item(), rel=1e-6)
        assert row["merge_error"] == pytest.approx(err.norm().item(), rel=1e-6)
        assert row["update_norm"] == pytest.approx(layer.delta_weight("default").norm().item(), rel=1e-6)
        assert 0 < row["max_error"] and layer.merge_reports == [row]
    with torch.no_grad():
        merged_out = model(input_ids=ids).logits  # adapters skipped, requantized bases used
    assert 0 < (merged_out - unmerged_out).abs().max() < 0.5 * unmerged_out.abs().max()
    with pytest.raises(HfxError, match="merged into the quantized base"):
        hfx.save(model, tmp_path / "merged")  # base + adapters would apply the update twice on load
    unmerge_adapter(model)  # back to the original packed layers, bit for bit
    assert all(m.base_layer is orig for m, orig in zip(layers, originals, strict=True))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, unmerged_out)
    plain = merge_and_unload(model)
    assert not any(isinstance(m, LoraLayer) for m in plain.modules())
    assert isinstance(plain.get_submodule("model.layers.0.self_attn.q_proj"), QuantLinear)
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, merged_out)


def test_run_quant_lora_merge_saves_packed_merged_model_and_report(tiny_llama_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # `hfx run plugin=[quant,lora] lora.merge=true`: the merged model is the requantized packed model (quant's
    # format, loadable by load_quantized), and merge_report.json holds one row per merged layer whose figures
    # are checked against the merged layers themselves (update_norm of s B A is the recomputed ||delta||).
    import json

    from hfx.runner.run import run
    from hfx_plugins.quant import load_quantized

    res = run(["plugin=[quant,lora]", f"model={tiny_llama_dir}", f"output_dir={tmp_path / 'runs'}",
               "data.path=instructions", "train.max_steps=2", "train.batch_size=4", "data.max_train_samples=8",
               "data.max_eval_samples=4", "lora.eval_generations=0", "lora.merge=true", "lora.lora_alpha=16",
               "quant.bits=4", "quant.group_size=16"])
    art = res.run_dir / "artifacts"
    rows = json.loads((art / "merge_report.json").read_text())
    assert len(rows) == 8  # lora's default targets on Llama: q, k, v, o of 2 layers, all on QuantLinear bases
    assert all(r["adapters"] == "default" and r["update_norm"] > 0 and 0 < r["merge_error"] for r in rows)
    assert all(r["error_vs_update"] == pytest.approx(r["merge_error"] / r["update_norm"]) for r in rows)
    merged = load_quantized(art / "merged")
    assert isinstance(merged.get_submodule("model.layers.0.self_attn.q_proj"), QuantLinear)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
