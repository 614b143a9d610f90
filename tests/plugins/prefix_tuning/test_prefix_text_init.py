"""The prefix's text init, and that training reaches the prefix: gradients in every layer, as finite differences say.

Expected values: the frozen model's own forward with the text's tokens in front of the input (what a prefix
started from that text's keys and values must reproduce: Li & Liang 2021, §7.2), and central finite
differences of the loss (what autograd's gradient of the prefix must equal).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.prefix_tuning import PrefixTuningRunConfig, get_encoder, init_from_text

TEXT = ["the function returns a new list", "a list"]


def test_a_text_initialised_prefix_is_the_text_read_in_front_of_the_input() -> None:
    model, tok = tiny_model("llama")  # rotary positions: the text's keys sit at 0 .. n - 1, the input after
    base = copy.deepcopy(model)
    hfx.apply(model, "prefix_tuning", num_virtual_tokens=5)
    ids = init_from_text(model, tok, "classify the list")  # 3 tokens, repeated to 5
    assert ids == (tok("classify the list")["input_ids"] * 5)[:5]
    x = tok(TEXT, return_tensors="pt", padding=True)  # right-padded, 2 rows
    with torch.no_grad():
        ours = model(**x).logits  # (2, T, V)
        full = torch.cat([torch.tensor([ids] * 2), x["input_ids"]], 1)  # (2, 5 + T)
        mask = torch.cat([torch.ones(2, 5, dtype=torch.long), x["attention_mask"]], 1)
        theirs = base(input_ids=full, attention_mask=mask).logits[:, 5:]  # (2, T, V)
    keep = x["attention_mask"].bool()
    assert (ours - theirs)[keep].abs().max() < 1e-5
    assert get_encoder(model).injector.enabled  # switched back on after reading the text


def test_text_init_refuses_a_projected_prefix() -> None:
    model, tok = tiny_model("llama")
    hfx.apply(model, "prefix_tuning", num_virtual_tokens=3, prefix_projection=True)
    with pytest.raises(HfxError, match="needs prefix_projection=false"):
        init_from_text(model, tok, "classify")
    with pytest.raises(HfxError, match="init_text writes the prefix itself"):
        PrefixTuningRunConfig(init_text="classify", prefix_projection=True)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_loss_gradient_reaches_every_layer_keys_and_values_as_finite_differences_say(family: str) -> None:
    model, tok = tiny_model(family, dropout=0.0)
    torch.manual_seed(0)
    hfx.apply(model, "prefix_tuning", num_virtual_tokens=3)
    model.double()  # float64 throughout, prefix included, so that finite differences are exact enough
    weight = get_encoder(model).embedding.weight  # (n, L * 2 * d)
    x = tok(TEXT, return_tensors="pt", padding=True)
    labels = x["input_ids"].masked_fill(x["attention_mask"] == 0, -100)[:, 1:].flatten()  # (B * (T - 1),)

    def loss() -> torch.Tensor:  # in float64: transformers' own loss casts the logits to float32
        return torch.nn.functional.cross_entropy(model(**x).logits[:, :-1].flatten(0, 1), labels, ignore_index=-100)

    loss().backward()
    grad = weight.grad.clone()
    layers = model.config.num_hidden_layers if family == "llama" else model.config.n_layer
    per_layer = grad.view(3, layers, 2, -1).abs().sum((0, 3))  # (L, 2): keys, values
    assert (per_layer > 0).all()
    direction = torch.randn_like(weight)
    h = 1e-2  # not smaller: RMSNorm computes in float32 even in a float64 model
    with torch.no_grad():
        weight.add_(h * direction)
        up = loss().item()
        weight.sub_(2 * h * direction)
        down = loss().item()
        weight.add_(h * direction)
    assert (up - down) / (2 * h) == pytest.approx(float((grad * direction).sum()), rel=1e-2)


def test_run_starts_the_prefix_from_init_text(cli, tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = cli("run", "plugin=prefix_tuning", f"model={tiny_llama_dir}", "train.max_steps=1", "train.batch_size=4",
                 "data.max_train_samples=4", "data.max_eval_samples=4", "prefix_tuning.num_virtual_tokens=4",
                 "prefix_tuning.init_text=classify the list", f"output_dir={tmp_path}")
    assert result.code == 0, result.err
    assert "prefix started from the keys and values of 4 tokens of 'classify the list'" in result.out
