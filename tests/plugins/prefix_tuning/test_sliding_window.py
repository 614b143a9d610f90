"""Prefix tuning on models with sliding-window attention: exact while prefix + sequence fit in the window, refused
in one line beyond it.

Tiny random configs keep each family's attention layout: Mistral v0.1 and Phi-3-mini-4k (every layer sliding),
Gemma 2 (sliding and global layers alternate), Gemma 3's text model (five sliding layers to one global). Expected
numbers: peft 0.21.2's prefix tuning on the same model and seed (which passes the prefix as past key values), and
the same weights under a window that never binds (a hand check that the window took nothing away).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hfx
from hfx.errors import HfxError
from hfx_plugins.prompt_learning import greedy_by_forward

N, W = 3, 8  # virtual tokens, sliding window
_SIZES = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
          "intermediate_size": 64, "vocab_size": 96, "max_position_embeddings": 128, "pad_token_id": 0,
          "bos_token_id": 1, "eos_token_id": 2}
FAMILIES = {"mistral": {}, "phi3": {}, "gemma2": {"head_dim": 8},
            "gemma3_text": {"head_dim": 8, "num_hidden_layers": 6}}


def _model(model_type: str, window: int = W) -> torch.nn.Module:
    cfg = AutoConfig.for_model(model_type, **{**_SIZES, **FAMILIES[model_type]}, sliding_window=window)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _ids(length: int) -> torch.Tensor:
    return torch.randint(3, 96, (2, length), generator=torch.Generator().manual_seed(0))


def _prefixed(base: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)  # peft's and hfx's prefixes are drawn from this RNG state
    return hfx.apply(copy.deepcopy(base), "prefix_tuning", num_virtual_tokens=N)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_prefix_and_sequence_within_the_window_equal_peft_and_an_unbound_window(model_type: str) -> None:
    from peft import PrefixTuningConfig, get_peft_model

    base = _model(model_type)
    layers = {type(x).__name__ for x in __import__("transformers").DynamicCache(config=base.config).layers}
    assert "DynamicSlidingWindowLayer" in layers  # refused before: "sliding-window ... would drop the prefix"
    ours = _prefixed(base)
    assert ours.prefix_encoder.injector.window == W
    torch.manual_seed(1)
    theirs = get_peft_model(copy.deepcopy(base), PrefixTuningConfig(num_virtual_tokens=N, task_type="CAUSAL_LM"))
    unbound = _model(model_type, window=1000)  # same weights (same seed), a window no sequence here reaches
    wide = _prefixed(unbound)
    ids = _ids(W - N)  # prefix + sequence = the window exactly
    with torch.no_grad():
        got = ours(input_ids=ids).logits
        torch.testing.assert_close(got, theirs.eval()(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got, wide(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
        assert (got - base(input_ids=ids).logits).abs().max() > 1e-3  # the prefix is in the outputs


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_a_sequence_past_the_window_is_refused_in_one_line(model_type: str) -> None:
    from peft import PrefixTuningConfig, get_peft_model

    base = _model(model_type)
    ids = _ids(W - N + 1)  # one position too many: the first query that sees past the prefix
    with pytest.raises(HfxError, match=rf"{N} virtual tokens \+ {W - N + 1} tokens = {W + 1} positions exceed the "
                                       rf"sliding window of {W}") as err:
        _prefixed(base)(input_ids=ids)
    assert "\n" not in str(err.value)
    # Why: there the window drops the prefix for the later tokens (peft computes that silently), and the outputs
    # part from the same prefix under a window that does not bind.
    torch.manual_seed(1)
    theirs = get_peft_model(copy.deepcopy(base), PrefixTuningConfig(num_virtual_tokens=N, task_type="CAUSAL_LM"))
    with torch.no_grad():
        gap = (theirs.eval()(input_ids=ids).logits - _prefixed(_model(model_type, 1000))(input_ids=ids).logits)
    assert gap.abs().max() > 1e-2


def test_generate_inside_the_window_equals_argmax_decoding_and_stops_at_its_edge() -> None:
    model = _prefixed(_model("mistral"))
    ids = _ids(2)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        # 2 prompt tokens + 3 fed back = 5 real positions after the 3 virtual ones: the window exactly (the 4th new
        # token is predicted at the window's last position and never fed)
        got = model.generate(**inputs, max_new_tokens=W - N - 1, do_sample=False)
        want = greedy_by_forward(model, inputs, W - N - 1)  # full forward passes with the prefix, argmax each step
        assert got.shape[1] == 2 + W - N - 1 and torch.equal(got, want)
        with pytest.raises(HfxError, match="exceed the sliding window"):
            model.generate(**inputs, max_new_tokens=W - N, do_sample=False)


def test_a_prefix_that_fills_the_window_is_refused_at_apply() -> None:
    with pytest.raises(HfxError, match=rf"num_virtual_tokens={W} does not fit .* sliding window of {W}"):
        hfx.apply(_model("mistral"), "prefix_tuning", num_virtual_tokens=W)


def test_the_saved_prefix_loads_in_peft_with_the_same_outputs(tmp_path: Path) -> None:
    from peft import PeftModel

    base = _model("gemma2")
    ours = _prefixed(base)
    hfx.save(ours, tmp_path / "prefix")
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "prefix").eval()
    ids = _ids(W - N)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
