"""Two-way interchange with peft, and strict loading.

Expected values: what peft (installed version) computes for the same adapter, and peft 0.10.0's config
fields (hfx_plugins.lora.peft_config.OLD_PEFT_KEYS, read from that release's source)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from lora_helpers import PEFT_TASK, batch, logits, lora_tensors, pair, randomize
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model
from hfx_plugins.lora import get_state, set_adapter
from hfx_plugins.lora.peft_config import OLD_PEFT_KEYS


@pytest.mark.parametrize(("family", "variant"), [
    ("bert", {}), ("llama", {"use_dora": True}), ("gpt2", {}), ("t5", {"use_rslora": True}),
    ("llama", {"target_modules": ["embed_tokens", "q_proj"], "bias": "lora_only"}),
])
def test_hfx_saved_adapter_loads_in_peft_without_warning(family: str, variant: dict, tmp_path: Path) -> None:
    from peft import PeftModel

    ours, _, tok = pair(family, r=4, lora_alpha=8, **variant)
    randomize(ours)
    inputs = batch(tok, family)
    expected = logits(ours, inputs)
    hfx.save(ours, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert set(cfg) <= OLD_PEFT_KEYS  # loadable by peft < 0.14, which rejects unknown keys
    assert cfg["task_type"] == PEFT_TASK[family] and cfg["peft_type"] == "LORA"
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = list(f.keys())
    assert all(k.startswith("base_model.model.") and ".default." not in k for k in keys)  # peft's key names
    base, _ = tiny_model(family)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Found missing adapter keys" and any other warning fail the test
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' own deprecations
        theirs = PeftModel.from_pretrained(base, tmp_path)
    assert (logits(theirs, inputs) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(("family", "variant"), [("bert", {}), ("gpt2", {"use_dora": True}), ("t5", {}),
                                                 ("llama", {"target_modules": ["embed_tokens", "v_proj"]})])
def test_peft_saved_adapter_loads_in_hfx(family: str, variant: dict, tmp_path: Path) -> None:
    _, theirs, tok = pair(family, r=4, lora_alpha=8, **variant)
    randomize(theirs)
    inputs = batch(tok, family)
    expected = logits(theirs, inputs)  # peft's output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft notes it also saves the embedding layer
        theirs.save_pretrained(tmp_path)
    base, _ = tiny_model(family)
    ours = hfx.load(base, tmp_path)
    assert (logits(ours, inputs) - expected).abs().max() <= 1e-5


def test_round_trip_keeps_every_adapter_and_the_active_one(tmp_path: Path) -> None:
    ours, _, tok = pair("llama", r=4)
    hfx.apply(ours, "lora", r=2, target_modules=["k_proj"], adapter_name="other")
    set_adapter(ours, "default")
    randomize(ours)
    hfx.save(ours, tmp_path)
    assert (tmp_path / "other" / "adapter_config.json").is_file()  # peft's layout for named adapters
    loaded = hfx.load(tiny_model("llama")[0], tmp_path)
    assert list(get_state(loaded).configs) == ["default", "other"] and get_state(loaded).active == ["default"]
    for key, value in lora_tensors(ours).items():
        torch.testing.assert_close(lora_tensors(loaded)[key], value, rtol=0, atol=0)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    ours, _, _ = pair("llama", r=4, use_dora=True)
    randomize(ours)
    hfx.save(ours, tmp_path / "adapter")
    return tmp_path / "adapter"


def _edit(folder: Path, change) -> None:
    file = folder / "adapter_model.safetensors"
    tensors = load_file(str(file))
    change(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def _assert_untouched(model: torch.nn.Module) -> None:
    assert not hasattr(model, "hfx_lora") and not any("lora" in k for k in model.state_dict())


def test_missing_key_is_an_error_and_the_model_is_left_alone(saved: Path) -> None:
    _edit(saved, lambda t: t.pop("base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector"))
    base = tiny_model("llama")[0]
    with pytest.raises(HfxError, match=r"missing .*layers\.1\.self_attn\.v_proj\.lora_magnitude_vector"):
        hfx.load(base, saved)
    _assert_untouched(base)


def test_unexpected_key_is_an_error(saved: Path) -> None:
    _edit(saved, lambda t: t.update({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": torch.zeros(4, 32)}))
    with pytest.raises(HfxError, match=r"up_proj\.lora_A\.weight' fits no parameter"):
        hfx.load(tiny_model("llama")[0], saved)


def test_base_of_other_shapes_names_layer_and_both_shapes(saved: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    wider = LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64))
    with pytest.raises(HfxError, match=r"model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \(4, 32\) in "
                                       r"the file but \(4, 48\) in the model \(layer 'model\.layers\.0\.self_attn"
                                       r"\.q_proj' \(in 48, out 48\)\)"):
        hfx.load(wider, saved)
    _assert_untouched(wider)


def test_pickle_files_are_refused(saved: Path) -> None:
    (saved / "adapter_model.safetensors").rename(saved / "adapter_model.bin")
    with pytest.raises(HfxError, match="pickle, which hfx does not load"):
        hfx.load(tiny_model("llama")[0], saved)


def test_unsupported_peft_features_are_refused(saved: Path) -> None:
    cfg = json.loads((saved / "adapter_config.json").read_text())
    (saved / "adapter_config.json").write_text(json.dumps({**cfg, "init_lora_weights": "pissa"}))
    with pytest.raises(HfxError, match="initialised with 'pissa', which changes the base weights"):
        hfx.load(tiny_model("llama")[0], saved)
    (saved / "adapter_config.json").write_text(json.dumps({**cfg, "use_qalora": True}))
    with pytest.raises(HfxError, match="use_qalora"):
        hfx.load(tiny_model("llama")[0], saved)
