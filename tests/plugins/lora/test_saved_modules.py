"""``modules_to_save`` follows peft's matching rule, so a DistilBERT classifier's adapter loads in peft.

peft (``peft.utils.other._set_trainable``) wraps every module whose path ends with a listed name as a plain
string suffix: ``classifier`` also matches DistilBERT's ``pre_classifier``. (Its rule for ``target_modules``,
``check_target_module_exists``, needs a dot boundary; the two rules differ.) Independent source: peft 0.21's
``get_peft_model`` on the same model lists the wrapped modules, and ``PeftModel.from_pretrained`` of hfx's
folder gives the logits of the model hfx saved.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

import hfx
from hfx.testing import tiny_tokenizer
from hfx_plugins.lora.checks import randomize
from hfx_plugins.lora.trainable import ModulesToSave

TEXTS = ["the function returns a new list of values", "a class"]


def _distilbert() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    tok = tiny_tokenizer("bert")
    config = DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids", None)
    return DistilBertForSequenceClassification(config).eval(), enc


def test_the_wrapped_modules_are_peft_s() -> None:
    from peft import LoraConfig, get_peft_model

    ours, _ = _distilbert()
    theirs = get_peft_model(copy.deepcopy(ours), LoraConfig(r=4, target_modules=["q_lin", "v_lin"], task_type="SEQ_CLS"))
    hfx.apply(ours, "lora", r=4, target_modules=["q_lin", "v_lin"])
    wrapped = sorted(k for k, m in ours.named_modules() if isinstance(m, ModulesToSave))
    peft_wrapped = sorted(k.removeprefix("base_model.model.") for k, m in theirs.named_modules()
                          if type(m).__name__ == "ModulesToSaveWrapper")
    assert wrapped == peft_wrapped == ["classifier", "pre_classifier"]


def test_hfx_s_distilbert_classifier_adapter_loads_in_peft(tmp_path: Path) -> None:
    from peft import PeftModel

    ours, enc = _distilbert()
    base, fresh = copy.deepcopy(ours), copy.deepcopy(ours)  # peft adapts its base in place
    hfx.apply(ours, "lora", r=4, target_modules=["q_lin", "v_lin"])
    randomize(ours, scale=0.3)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if ".modules_to_save." in name:
                p.add_(torch.randn_like(p) * 0.3)  # both trained heads differ from the base's
        want = ours(**enc).logits
    hfx.save(ours, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = PeftModel.from_pretrained(base, tmp_path).eval()
    assert not [w for w in caught if "missing" in str(w.message).lower()]  # peft finds every key it expects
    with torch.no_grad():
        assert (theirs(**enc).logits - want).abs().max() <= 1e-5
    back = hfx.load(fresh, tmp_path)  # and hfx reads its own folder back
    with torch.no_grad():
        assert (back(**enc).logits - want).abs().max() <= 1e-5
