"""hfx's LoRA against peft's on tiny models: the same initial A and B, the same outputs, the same trainable
parameter count, and the same losses over 20 training steps. Expected values: peft (installed version),
run on the same tiny model from the same seed."""

from __future__ import annotations

import pytest
import torch
from lora_helpers import batch, logits, lora_tensors, pair, randomize

from hfx.parity import train_losses
from hfx_plugins.lora import parameter_counts


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "t5"])
@pytest.mark.parametrize("variant", [{}, {"use_rslora": True, "init_lora_weights": "gaussian"}, {"use_dora": True}])
def test_init_outputs_and_counts_match_peft(family: str, variant: dict) -> None:
    ours, theirs, tok = pair(family, r=4, lora_alpha=8, **variant)
    a, b = lora_tensors(ours), lora_tensors(theirs)
    assert a.keys() == b.keys()  # same parameter names, so checkpoints map one to one
    for key in a:  # peft: same seed -> same A (Kaiming or Gaussian) and B (zero)
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert parameter_counts(ours) == theirs.get_nb_trainable_parameters()  # peft's (trainable, total)
    randomize(ours, theirs)  # non-zero B, so the adapters change the outputs
    inputs = batch(tok, family)
    assert (logits(ours, inputs) - logits(theirs, inputs)).abs().max() <= 1e-5


def test_all_linear_matches_peft() -> None:
    ours, theirs, tok = pair("llama", r=4, target_modules="all-linear")
    assert lora_tensors(ours).keys() == lora_tensors(theirs).keys()  # lm_head excluded by both
    assert not any("lm_head" in k for k in lora_tensors(ours))


@pytest.mark.parametrize("use_dora", [False, True])
def test_embedding_matches_peft(use_dora: bool) -> None:
    ours, theirs, tok = pair("llama", r=4, target_modules=["embed_tokens", "q_proj"], lora_dropout=0.1,
                             use_dora=use_dora)
    for key, value in lora_tensors(ours).items():  # embeddings: A zero, B ~ N(0, 1) drawn like peft
        torch.testing.assert_close(value, lora_tensors(theirs)[key], rtol=0, atol=0)
    randomize(ours, theirs)
    inputs = batch(tok, "llama")
    assert (logits(ours, inputs) - logits(theirs, inputs)).abs().max() <= 1e-5


def test_patterns_and_layer_selection_match_peft() -> None:
    fields = dict(r=4, target_modules=["q_proj", "v_proj", "o_proj"], rank_pattern={"v_proj": 2},
                  alpha_pattern={"q_proj": 16}, layers_to_transform=[1], exclude_modules=["o_proj"])
    ours, theirs, _ = pair("llama", **fields)
    a, b = lora_tensors(ours), lora_tensors(theirs)
    assert sorted(a) == sorted(b) and all(".1." in k for k in a)
    assert a["model.layers.1.self_attn.v_proj.lora_A.default.weight"].shape == (2, 32)
    layer, twin = ours.model.layers[1].self_attn, theirs.base_model.model.model.layers[1].self_attn
    assert layer.q_proj.scaling == twin.q_proj.scaling == {"default": 4.0}  # alpha 16 / r 4


def _train(model: torch.nn.Module, inputs: dict, steps: int = 20) -> list[float]:
    # seed 5: the dropout masks are the same draws in the same order for both libraries
    return train_losses(model, inputs, steps, lr=1e-2, seed=5)


@pytest.mark.parametrize(("family", "variant"), [
    ("llama", {}), ("llama", {"use_rslora": True}), ("llama", {"use_dora": True}),
    ("llama", {"lora_dropout": 0.1}),
    # beyond peft's default c_attn (Conv1D 32 -> 96): c_proj, also Conv1D, 32 -> 32 and 64 -> 32 (in > out)
    ("gpt2", {"use_dora": True, "target_modules": ["c_attn", "c_proj"]}),
])
def test_twenty_training_steps_match_peft(family: str, variant: dict) -> None:
    ours, theirs, tok = pair(family, r=4, lora_alpha=8, **variant)
    inputs = batch(tok, family)
    expected = _train(theirs, inputs)  # peft's losses, step by step
    got = _train(ours, inputs)
    assert expected[-1] < expected[0] - 0.05  # the adapter does learn
    for step, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert abs(g - e) <= 1e-4 * abs(e), f"step {step + 1}: hfx {g} vs peft {e}"
