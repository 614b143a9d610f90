"""Quantization-aware training: the straight-through estimator, training, and ``convert`` to packed layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.qat import FakeQuantLinear, convert
from hfx_plugins.qat.fake import fake_quant_ste
from hfx_plugins.quant import QuantLinear

TEXTS = ["the function returns a new list", "a class may define its own methods"]


def _inputs(tok) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids", None)
    return enc


def test_ste_gradient_by_hand() -> None:
    # s = 1, Z = 0, codes [0, 3]: 0.4 -> 0, 1.6 -> 2, 5.0 -> 3 (clamped), -2 -> 0 (clamped).
    x = torch.tensor([0.4, 1.6, 5.0, -2.0], requires_grad=True)
    y = fake_quant_ste(x, torch.tensor(1.0), torch.tensor(0.0), 0, 3)
    assert y.tolist() == [0.0, 2.0, 3.0, 0.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]  # identity inside the range, zero where clamped


def test_weight_gradient_is_that_of_the_fake_quantized_linear() -> None:
    lin = torch.nn.Linear(24, 6)
    fq = FakeQuantLinear(lin, bits=3, group_size=8, symmetric=False)
    x = torch.randn(4, 24)
    fq(x).square().sum().backward()
    w_fq = fq.fake_weight().detach().requires_grad_(True)
    F.linear(x, w_fq, fq.bias).square().sum().backward()
    assert torch.allclose(fq.weight.grad, w_fq.grad)  # STE: dL/dW = dL/dW_fq
    assert fq.weight.dtype == torch.float32  # master weights stay full precision


@pytest.mark.parametrize("family,act_bits,observer", [
    ("bert", 0, "dynamic"), ("llama", 8, "dynamic"), ("gpt2", 8, "moving_average"), ("llama", 8, "percentile"),
])
def test_convert_equals_fake_quantized_forward(family: str, act_bits: int, observer: str) -> None:
    task = "sequence-classification" if family == "bert" else "causal-lm"
    model, tok = tiny_model(family, task, seed=0)
    model = hfx.apply(model, "qat", bits=4, group_size=24, act_bits=act_bits, act_observer=observer)
    assert any(isinstance(m, FakeQuantLinear) for m in model.modules())
    enc = _inputs(tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(8):  # a few real QAT steps so that observers and weights move
        out = model(**enc, labels=torch.tensor([0, 1]) if family == "bert" else enc["input_ids"])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        fake = model(**enc).logits
        packed = convert(model)
        assert not any(isinstance(m, FakeQuantLinear) for m in packed.modules())
        assert any(isinstance(m, QuantLinear) for m in packed.modules())
        assert (packed(**enc).logits - fake).abs().max() <= 1e-5  # float32 rounding of the same sums


def test_save_writes_packed_model(tmp_path: Path) -> None:
    model, tok = tiny_model("llama", "causal-lm", seed=0)
    model = hfx.apply(model, "qat", bits=2, group_size=16)
    enc = _inputs(tok)
    with torch.no_grad():
        fake = model.eval()(**enc).logits
    hfx.save(model, tmp_path / "qat")
    assert any(isinstance(m, FakeQuantLinear) for m in model.modules())  # saving converted a copy
    loaded = hfx.load(tiny_model("llama", "causal-lm", seed=3)[0], tmp_path / "qat")
    with torch.no_grad():
        assert (loaded(**enc).logits - fake).abs().max() <= 1e-5


def test_bad_input() -> None:
    model, _ = tiny_model("llama", "causal-lm", seed=0)
    with pytest.raises(HfxError, match="qat.bits=6 is not supported"):
        hfx.apply(model, "qat", bits=6)
    with pytest.raises(HfxError, match="act_bits must be 0"):
        hfx.apply(model, "qat", act_bits=4)
    model.model.layers[0].self_attn.q_proj.weight.data[1, 2] = float("inf")
    with pytest.raises(HfxError, match=r"layer model\.layers\.0\.self_attn\.q_proj"):
        hfx.apply(model, "qat")
    model, _ = tiny_model("llama", "causal-lm", seed=0)
    model = hfx.apply(model, "qat", group_size=16)
    with pytest.raises(HfxError, match="QAT fake-quantized layers.*convert"):
        hfx.apply(model, "quant")
    with pytest.raises(HfxError, match="already quantized"):
        hfx.apply(convert(model), "qat")


def test_run_only_field_is_refused_by_apply_naming_hfx_run() -> None:
    # qat.qat_steps is a setting of the recipe's PTQ vs QAT comparison (QatRunConfig), not of the fake quantizer
    # that hfx.apply installs (QatConfig); hfx.registry.Plugin.make_config refuses it before the model changes.
    model, _ = tiny_model("llama", "causal-lm", seed=0)
    with pytest.raises(HfxError) as err:
        hfx.apply(model, "qat", bits=4, qat_steps=10)
    message = str(err.value)
    assert "\n" not in message and message.startswith("qat.qat_steps is a field of `hfx run`")
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
