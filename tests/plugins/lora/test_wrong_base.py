"""An adapter loaded onto a base it was not trained on is refused (embedding rows) or warned about (targeted
weights), naming the layer; the right base, a base in another dtype and peft's own folders load as before.

Independent sources: the logits of the model that was saved (the right base must reproduce them, the wrong one
does not: the refusal is not spurious), and peft 0.21's ``save_pretrained`` / ``PeftModel.from_pretrained``
(a folder peft wrote, without hfx's digests, still loads to peft's logits; peft loads hfx's folder).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from lora_helpers import pair, randomize

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model

IDS = torch.tensor([[1025, 5, 6, 1027, 9]])  # two of the four new tokens (the tiny vocabulary has 1,024)


def _resized(seed: int) -> torch.nn.Module:
    """The tiny Llama (no ``name_or_path``: nothing to compare a vocabulary with) resized to 1,028 rows, the new
    input rows drawn N(0, 1) from torch's RNG seeded ``seed`` (as a user's new tokens, trained or initialised)."""
    model, _ = tiny_model("llama", "causal-lm", seed=0)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model.resize_token_embeddings(1028)
        model.get_input_embeddings().weight[1024:].normal_()
    return model


def _out(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    model = hfx.apply(_resized(1), "lora", r=4, target_modules=["q_proj", "v_proj"])
    randomize(model, scale=0.5)
    hfx.save(model, tmp_path / "adapter")
    return tmp_path / "adapter", _out(model)


def test_other_random_new_rows_are_refused_naming_the_layer(saved: tuple[Path, torch.Tensor]) -> None:
    adapter, want = saved
    other = _resized(2)  # 1,028 rows as well, but other new rows: the sizes agree, the vocabulary does not
    loaded_anyway = copy.deepcopy(other)
    from hfx_plugins.lora import load_adapter

    load_adapter(loaded_anyway, adapter)  # the bare weights fit: only the recorded digests can tell
    assert (_out(loaded_anyway) - want).abs().max() > 1e-2  # silently wrong without the check
    with pytest.raises(HfxError, match=r"model\.embed_tokens.*differ"):
        hfx.load(other, adapter)
    assert not hasattr(other, "hfx_lora")  # the model is left as it was


def test_the_right_base_loads_exactly(saved: tuple[Path, torch.Tensor]) -> None:
    adapter, want = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        loaded = hfx.load(_resized(1), adapter)
    assert (_out(loaded) - want).abs().max() <= 1e-5


def test_a_targeted_weight_that_differs_is_named_in_a_warning(saved: tuple[Path, torch.Tensor]) -> None:
    adapter, _ = saved
    other = _resized(1)
    with torch.no_grad():
        other.model.layers[1].self_attn.v_proj.weight.add_(1e-3)  # e.g. a further fine-tuned base
    with pytest.warns(UserWarning, match=r"model\.layers\.1\.self_attn\.v_proj.*differ"):
        hfx.load(other, adapter)


def test_a_base_in_another_dtype_loads_without_a_warning(saved: tuple[Path, torch.Tensor]) -> None:
    adapter, want = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = hfx.load(_resized(1).to(torch.bfloat16), adapter)  # bf16 rounding is not another base
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16


def test_the_digests_are_hfx_metadata_that_peft_ignores(saved: tuple[Path, torch.Tensor]) -> None:
    from peft import PeftModel

    adapter, want = saved
    recorded = json.loads((adapter / "hfx_lora.json").read_text())["depends_on"]
    assert "model.embed_tokens" in recorded and "model.layers.0.self_attn.q_proj" in recorded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PeftModel.from_pretrained(_resized(1), adapter).eval()
    assert (_out(theirs) - want).abs().max() <= 1e-5


def test_a_folder_saved_by_peft_still_loads(tmp_path: Path) -> None:
    _, theirs, tok = pair("llama", r=4)
    randomize(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    ids = tok(["a class may define its own methods"], return_tensors="pt")["input_ids"]
    loaded = hfx.load(tiny_model("llama")[0], tmp_path / "peft")
    with torch.no_grad():
        assert (loaded(ids).logits - theirs(ids).logits).abs().max() <= 1e-5
