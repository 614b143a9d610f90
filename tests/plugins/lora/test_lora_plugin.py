"""The plugin end to end: registration, ``hfx run plugin=lora`` on tiny models (all three families), and its
artifacts read back by peft and transformers. Expected outputs: what peft and transformers load from them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from hfx import registry
from hfx.data.collate import IGNORE_INDEX
from hfx.testing import tiny_tokenizer


def _artifacts(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run / "artifacts"


def test_registered_through_its_entry_point() -> None:
    plugin = registry.get("lora")
    assert plugin.config_cls.__name__ == "LoraConfig" and plugin.recipe is not None
    assert {p.stem for p in plugin.presets_dir.glob("*.yaml")} == {"default", "encoder", "foobar", "seq2seq"}


def test_run_instruction_tuning_saves_adapter_and_merged_model(cli, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = cli("run", "plugin=lora", f"model={tiny_llama_dir}", "train.max_steps=3", "train.batch_size=4",
                 "data.max_train_samples=16", "data.max_eval_samples=8", "lora.eval_generations=3",
                 "lora.max_new_tokens=3", "lora.merge=true", "lora.loraplus_lr_ratio=16", f"output_dir={tmp_path}")
    assert result.code == 0, result.err
    assert "trainable parameters 3,584 of 87,712" in result.out  # r=8 on q,k,v,o of 2 layers: 2*(4*8*32+...)
    assert "held-out answers before and after LoRA" in result.out
    art = _artifacts(tmp_path)
    assert len(json.loads((art / "answers.json").read_text())) == 3
    merged = AutoModelForCausalLM.from_pretrained(art / "merged")  # a plain transformers model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=FutureWarning)
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), art / "adapter")
    ids = tiny_tokenizer("llama")(["the value of an object"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (merged(ids).logits - adapted(ids).logits).abs().max() <= 1e-5


def test_answers_before_are_the_untrained_models_with_evaluations_during_training(cli, tiny_llama_dir: Path,
                                                                                   tmp_path: Path) -> None:
    # Expected: the "before" answers of a run without evaluations during training (the untrained model's).
    args = ["run", "plugin=lora", f"model={tiny_llama_dir}", "train.max_steps=3", "train.batch_size=4",
            "train.learning_rate=0.05", "data.max_train_samples=16", "data.max_eval_samples=8",
            "lora.eval_generations=3", "lora.max_new_tokens=3"]
    got = {}
    for every in (0, 1):
        out = tmp_path / str(every)
        assert cli(*args, f"train.eval_every={every}", f"output_dir={out}").code == 0
        got[every] = json.loads((_artifacts(out) / "answers.json").read_text())
    assert [r["before"] for r in got[1]] == [r["before"] for r in got[0]]
    assert [r["after"] for r in got[1]] != [r["before"] for r in got[1]]  # training changed the answers


def test_run_encoder_preset_trains_the_new_head(cli, tiny_bert_dir: Path, tmp_path: Path) -> None:
    result = cli("run", "plugin=lora", "preset=encoder", f"model={tiny_bert_dir}", "train.max_steps=2",
                 "train.batch_size=8", "train.eval_every=0", "data.max_train_samples=16", "data.max_eval_samples=8",
                 f"output_dir={tmp_path}")
    assert result.code == 0, result.err
    adapter = _artifacts(tmp_path) / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        assert "base_model.model.classifier.weight" in f.keys()


@pytest.mark.parametrize("bad", ["lora.r=0", "lora.target_modules=[nope]"])
def test_bad_run_config_is_one_line(cli, tiny_t5_dir: Path, tmp_path: Path, bad: str) -> None:
    result = cli("run", "plugin=lora", "preset=seq2seq", f"model={tiny_t5_dir}", "lora.modules_to_save=null", bad,
                 f"output_dir={tmp_path}")
    assert result.code == 2 and len(result.err_lines) == 1, result.err
    assert not any(tmp_path.iterdir())  # failed before any run folder was made


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_completion_loss_equals_the_models_own_loss(family: str) -> None:
    """The recipe's loss applies the output layer to labelled tokens only; expected: transformers' loss."""
    from lora_helpers import batch

    from hfx.testing import tiny_model
    from hfx_plugins.lora.sft import completion_loss

    model, tok = tiny_model(family)
    inputs = batch(tok, family)
    inputs["labels"][:, :4] = IGNORE_INDEX  # a masked prompt
    with torch.no_grad():
        assert abs(completion_loss(model, inputs).item() - model(**inputs).loss.item()) <= 1e-5
