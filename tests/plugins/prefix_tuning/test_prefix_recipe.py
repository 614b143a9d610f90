"""``hfx run plugin=prefix_tuning`` end to end on a tiny Llama; its adapter read back by peft.

Expected values: the recipe's own before/after table and the trainable-parameter count n x L x 2 x d_kv = 4 x 2 x 2 x 16."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from hfx import registry
from hfx.errors import HfxError


def test_registered_through_its_entry_point() -> None:
    plugin = registry.get("prefix_tuning")
    assert plugin.config_cls.__name__ == "PrefixTuningConfig" and plugin.recipe is not None
    assert plugin.run_only_fields() == ["template", "label_words", "init_text"]  # hfx.apply refuses them


def test_run_config_checks_the_label_task_under_its_section() -> None:
    from hfx_plugins.prefix_tuning import PrefixTuningRunConfig

    with pytest.raises(HfxError, match=r"prefix_tuning.template must contain \{text\}"):
        PrefixTuningRunConfig(template="no placeholder")
    with pytest.raises(HfxError, match="prefix_tuning.label_words must be 2 or more distinct words"):
        PrefixTuningRunConfig(label_words=[" a", " a"])
    with pytest.raises(HfxError, match="prefix_tuning.num_virtual_tokens must be a positive integer"):
        PrefixTuningRunConfig(num_virtual_tokens=0)  # the method config's own checks still run


def test_run_trains_and_saves_a_peft_adapter(cli, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = cli("run", "plugin=prefix_tuning", f"model={tiny_llama_dir}", "train.max_steps=2", "train.batch_size=4",
                 "data.max_train_samples=8", "data.max_eval_samples=8", "prefix_tuning.num_virtual_tokens=4",
 f"output_dir={tmp_path}")
    assert result.code == 0, result.err
    assert "a 4-token key/value prefix in each of 2 layers (2 KV heads of 8)" in result.out  # the recipe's describe(): what this plugin trains
    assert "trainable parameters 256 of" in result.out and "accuracy" in result.out
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=FutureWarning)
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), run / "artifacts" / "adapter")
