"""The drop-in Python API (hfx.apply / hfx.save / hfx.load) on tiny random BERT and Llama backbones.

References: losses are compared with torch's own ``F.cross_entropy`` (what ``*ForSequenceClassification``
computes for integer labels), saved folders are loaded back with transformers'
``AutoModelForSequenceClassification`` and must give the same logits as the hfx model they came from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import hfx
from hfx import registry
from hfx.errors import HfxError
from hfx.testing import tiny_model

TEXTS = [
    "the function returns a new list",
    "a class may define its own methods and attributes here",
    "this module is not available",
    "the value of the argument is used",
    "an error is raised if the file does not exist",
    "return the number of items",
    "the object is created when the class is called",
    "see the section below",
]
LABELS = [0, 1, 2, 0, 1, 2, 0, 1]
TOL = 1e-6  # same fp32 operations in the same order on the CPU: differences are rounding only


def batch(tokenizer, n: int = 4) -> dict[str, torch.Tensor]:
    """The first ``n`` texts, padded (they have different lengths, so padding and pooling matter)."""
    return dict(tokenizer(TEXTS[:n], padding=True, return_tensors="pt"))


@pytest.fixture(params=["bert", "llama"])
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_apply_puts_a_head_with_a_loss_on_a_bare_backbone(family: str) -> None:
    backbone, tok = tiny_model(family, "base")
    model = hfx.apply(backbone, "finetune", num_labels=3)
    model.eval()
    b = batch(tok)
    labels = torch.tensor(LABELS[:4])
    out = model(**b, labels=labels)
    assert out.logits.shape == (4, 3)
    # transformers' *ForSequenceClassification: CrossEntropyLoss(logits.view(-1, num_labels), labels.view(-1))
    assert out.loss.item() == pytest.approx(F.cross_entropy(out.logits, labels).item(), abs=TOL)
    (name, cfg), = hfx.api.applied(model)
    assert name == "finetune" and cfg.num_labels == 3


def test_apply_then_plain_transformers_trainer(family: str, tmp_path: Path) -> None:
    """The README's claim: an ordinary Trainer script with one hfx.apply line trains."""
    backbone, tok = tiny_model(family, "base")
    model = hfx.apply(backbone, "finetune", num_labels=3)  # <- the one hfx line
    train_set = datasets.Dataset.from_dict({**tok(TEXTS), "labels": LABELS})
    args = TrainingArguments(str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                             report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=DataCollatorWithPadding(tok))
    result = trainer.train()
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert result.training_loss == pytest.approx(sum(losses) / 2, rel=1e-4)
    after = model.state_dict()
    head = "classifier.weight" if family == "bert" else "score.weight"
    assert not torch.equal(before[head], after[head]), "the head did not train"
    backbone_key = next(k for k in after if "layers.0" in k or "layer.0" in k)
    assert not torch.equal(before[backbone_key], after[backbone_key]), "full fine-tuning also trains the backbone"


def test_save_is_loaded_by_transformers_with_identical_logits(family: str, tmp_path: Path) -> None:
    backbone, tok = tiny_model(family, "base")
    model = hfx.apply(backbone, "finetune", num_labels=3).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight, std=1.0)  # a head far from its init: a real check of the copy
    path = hfx.save(model, tmp_path / "model")
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    assert hf.config.num_labels == 3
    b = batch(tok)
    with torch.no_grad():
        ours, theirs = model(**b).logits, hf(**b).logits
    assert (ours - theirs).abs().max().item() <= TOL


def test_load_restores_onto_a_fresh_backbone(family: str, tmp_path: Path) -> None:
    backbone, tok = tiny_model(family, "base", seed=0)
    model = hfx.apply(backbone, "finetune", num_labels=3).eval()
    path = hfx.save(model, tmp_path / "model")
    fresh, _ = tiny_model(family, "base", seed=1)  # other random weights, same shapes
    b = batch(tok)
    with torch.no_grad():
        reference = model(**b).logits
        unloaded = hfx.apply(tiny_model(family, "base", seed=1)[0], "finetune", num_labels=3).eval()(**b).logits
        assert (reference - unloaded).abs().max().item() > 1e-3  # seed 1 really differs: the check below can fail
        loaded = hfx.load(fresh, path).eval()
        restored = loaded(**b).logits
    assert (reference - restored).abs().max().item() <= TOL
    (name, cfg), = hfx.api.applied(loaded)
    assert name == "finetune" and cfg.num_labels == 3


def test_load_onto_other_shapes_names_the_layer_and_both_shapes(tmp_path: Path) -> None:
    backbone, _ = tiny_model("bert", "base")
    path = hfx.save(hfx.apply(backbone, "finetune", num_labels=3), tmp_path / "model")
    config = tiny_model("bert", "base")[0].config
    config.intermediate_size = 80  # the tiny models use 64
    other = AutoModel.from_config(config)
    with pytest.raises(HfxError) as info:
        hfx.load(other, path)
    msg = str(info.value)
    assert "\n" not in msg
    # e.g. "bert.encoder.layer.0.intermediate.dense.bias: saved shape (64,) does not fit the model's (80,)"
    layer = msg.split(":")[0]
    assert layer.startswith("bert.encoder.layer.") and ("intermediate" in layer or "output.dense" in layer)
    assert "saved shape (" in msg and "64" in msg.split("saved shape")[1].split("does not fit")[0]
    assert "80" in msg.split("does not fit")[1]


def test_apply_with_unknown_field_suggests_the_nearest() -> None:
    backbone, _ = tiny_model("bert", "base")
    with pytest.raises(HfxError, match=r"unknown config field finetune\.'num_label' \(did you mean 'num_labels'\?\)"):
        hfx.apply(backbone, "finetune", num_label=3)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [({"num_labels": "three"}, "wrong value for 'num_labels'"), ({"freeze_base": "sometimes"}, "freeze_base"),
     ({"num_labels": 0}, "finetune.num_labels must be at least 1")],
)
def test_apply_with_wrong_type_or_value(fields: dict, needle: str) -> None:
    backbone, _ = tiny_model("bert", "base")
    with pytest.raises(HfxError, match=needle):
        hfx.apply(backbone, "finetune", **fields)


def test_apply_unknown_plugin() -> None:
    with pytest.raises(HfxError, match="did you mean 'finetune'"):
        hfx.apply(torch.nn.Linear(2, 2), "fintune")


def test_save_without_plugin_writes_the_whole_model(tmp_path: Path) -> None:
    model, tok = tiny_model("bert", "sequence-classification", num_labels=2)
    path = hfx.save(model, tmp_path / "whole")
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    b = batch(tok)
    with torch.no_grad():
        assert (model(**b).logits - hf(**b).logits).abs().max().item() <= TOL
    with pytest.raises(HfxError, match="nothing to save"):
        hfx.save(torch.nn.Linear(2, 2), tmp_path / "linear")


def test_load_errors(tmp_path: Path) -> None:
    backbone, _ = tiny_model("bert", "base")
    with pytest.raises(HfxError, match="does not exist"):
        hfx.load(backbone, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfxError, match="no installed plugin recognises"):
        hfx.load(backbone, tmp_path / "empty")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails midway leaves nothing at the target (and an older save there untouched)."""
    real = registry.get("finetune")

    def failing_save(model, path):
        real.save(model, path)  # the weights are written ...
        raise RuntimeError("disk full")  # ... then the save fails

    monkeypatch.setitem(registry._cache, "finetune", dataclasses.replace(real, save=failing_save))
    parent = tmp_path / "out"
    parent.mkdir()
    model = hfx.apply(tiny_model("bert", "base")[0], "finetune", num_labels=3)
    with pytest.raises(RuntimeError, match="disk full"):
        hfx.save(model, parent / "model")
    assert list(parent.iterdir()) == []  # no target, no temporary folder

    monkeypatch.setitem(registry._cache, "finetune", real)
    hfx.save(model, parent / "model")
    files = {p.name: p.read_bytes() for p in (parent / "model").iterdir()}
    assert "model.safetensors" in files
    monkeypatch.setitem(registry._cache, "finetune", dataclasses.replace(real, save=failing_save))
    with pytest.raises(RuntimeError, match="disk full"):
        hfx.save(model, parent / "model")
    assert [p.name for p in parent.iterdir()] == ["model"]
    assert {p.name: p.read_bytes() for p in (parent / "model").iterdir()} == files


def test_hfx_apply_reaches_the_lora_layer_in_four_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    # The route from hfx.apply to the nn.Linear that holds LoRA's A, as torchtune and peft keep it short:
    # hfx.apply -> lora/apply.py:add_adapter -> inject.py:inject -> layer.py:LoraLinear.add_adapter -> nn.Linear.
    # Before, a lazy wrapper's __call__ and a one-line apply() that only forwarded to model.py sat in between.
    import traceback

    routes: list[list[str]] = []
    original = torch.nn.Linear.__init__

    def recording(self: torch.nn.Linear, *args: object, **kwargs: object) -> None:
        frames = traceback.extract_stack()[:-1]
        start = next((i for i, f in enumerate(frames) if f.filename.endswith("hfx/api.py")), None)
        if start is not None:
            routes.append([f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.name}" for f in frames[start:]])
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Linear, "__init__", recording)
    hfx.apply(tiny_model("llama", "causal-lm")[0], "lora", r=2, target_modules=["q_proj"])
    assert routes and routes[0] == ["hfx/api.py:apply", "lora/apply.py:add_adapter", "lora/inject.py:inject",
                                    "lora/layer.py:add_adapter"], routes[:1]
