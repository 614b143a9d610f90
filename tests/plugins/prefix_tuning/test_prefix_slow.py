"""prefix_tuning and prompt_tuning on the real smollm2-135m (grouped-query attention: 9 query, 3 KV heads).

Expected values: what peft 0.21.2 computes from the hfx-saved adapter, and argmax decoding by plain forward
passes for greedy generate()."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import hfx
from hfx_plugins.prompt_learning import greedy_by_forward

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("plugin", ["prefix_tuning", "prompt_tuning"])
def test_smollm2_adapter_loads_in_peft_and_generates_with_it(plugin: str, tmp_path: Path) -> None:
    from peft import PeftModel

    from hfx.models.loading import load_model

    model, tok = load_model("smollm2-135m", "causal-lm")
    torch.manual_seed(0)
    hfx.apply(model, plugin, num_virtual_tokens=5)
    x = dict(tok(["Sentence: the film was wonderful.\nLabel:"], return_tensors="pt"))
    with torch.no_grad():
        ours = model(**x).logits  # (1, T, V)
        got = model.generate(**x, max_new_tokens=5, do_sample=False)
    assert torch.equal(got, greedy_by_forward(model, x, got.shape[1] - x["input_ids"].shape[1]))
    hfx.save(model, tmp_path)
    base, _ = load_model("smollm2-135m", "causal-lm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=FutureWarning)
        theirs = PeftModel.from_pretrained(base, tmp_path)
    with torch.no_grad():
        peft_logits = theirs(**x).logits[:, 5 if plugin == "prompt_tuning" else 0:]
    assert (peft_logits - ours).abs().max() <= 1e-5  # the same fp32 operations in both libraries
