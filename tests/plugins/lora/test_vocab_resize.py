"""Adapters over a resized vocabulary: the new tokens' embedding rows are saved and restored exactly.

Independent source: peft 0.21.2 loading the hfx-saved folder onto a freshly resized base
(``PeftModel.from_pretrained``) gives the logits of the model that was saved.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import hfx
from hfx.errors import HfxError
from hfx.testing import tiny_model

NEW = ["<t1>", "<t2>", "<t3>", "<t4>"]


def _base(folder: Path, resized_to: int | None) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()  # config.name_or_path = folder, as from a hub id
    if resized_to is not None:
        model.resize_token_embeddings(resized_to)  # new rows drawn at random (transformers' mean resizing)
    return model


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, Path, torch.Tensor, torch.Tensor, int]:
    base, tok = tiny_model("llama", "causal-lm", seed=0)
    base.save_pretrained(tmp_path / "base")
    tok.add_tokens(NEW)
    vocab = len(tok)
    model = _base(tmp_path / "base", vocab)
    model = hfx.apply(model, "lora", r=4, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # a trained-looking adapter
    ids = torch.tensor([[tok.convert_tokens_to_ids(NEW[0]), 5, 6, tok.convert_tokens_to_ids(NEW[3])]])
    with torch.no_grad():
        want = model(ids).logits
    with pytest.warns(UserWarning, match=f"embeddings have {vocab} rows where the base config has {vocab - 4}"):
        hfx.save(model, tmp_path / "adapter")
    return tmp_path / "base", tmp_path / "adapter", ids, want, vocab


def test_reload_onto_a_fresh_resized_base_is_exact(saved: tuple) -> None:
    base_dir, adapter, ids, want, vocab = saved
    fresh = _base(base_dir, vocab)
    with torch.no_grad():
        other = fresh(ids).logits  # the fresh base's own new rows differ
    loaded = hfx.load(fresh, adapter)
    with torch.no_grad():
        got = loaded(ids).logits
    assert not torch.allclose(other, want, atol=1e-3)
    assert torch.allclose(got, want, atol=1e-5)


def test_peft_loads_the_hfx_folder(saved: tuple) -> None:
    from peft import PeftModel

    base_dir, adapter, ids, want, vocab = saved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(_base(base_dir, vocab), adapter).eval()
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, want, atol=1e-5)


def test_unresized_base_is_refused_with_the_reason(saved: tuple) -> None:
    base_dir, adapter, _, _, vocab = saved
    with pytest.raises(HfxError, match=f"trained with {vocab} embedding rows .* has {vocab - 4}; call model.resize_token_embeddings"):
        hfx.load(_base(base_dir, None), adapter)
