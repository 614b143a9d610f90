"""``hfx run plugin=lora preset=foobar``: the preset composes, and trains and scores on ``sentiment_foobar``.

The preset is instruction tuning of the label word ("foo" / "bar", the data's ``label_text``) after each
sentence; the real run (smollm2-135m, 100 steps) is in the plugin's README. Here a tiny random Llama runs it
for two steps; expected figures come from the bundled data (100 held-out sentences) and the preset file.
"""

from __future__ import annotations

import json
from pathlib import Path

from hfx.config.compose import compose


def test_preset_composes_to_sentiment_foobar_label_words() -> None:
    cfg, plugins = compose(["plugin=lora", "preset=foobar"])
    assert [p.name for p in plugins] == ["lora"]
    assert (cfg.model, cfg.task, cfg.data.path) == ("smollm2-135m", "causal-lm", "sentiment_foobar")
    assert (cfg.data.text_column, cfg.data.target_column) == ("text", "label_text")
    assert cfg.lora.eval_generations >= 100  # every one of the 100 held-out sentences is answered


def test_preset_runs_on_a_tiny_llama(cli, tiny_llama_dir: Path, tmp_path: Path) -> None:
    result = cli("run", "plugin=lora", "preset=foobar", f"model={tiny_llama_dir}", "train.max_steps=2",
                 "train.batch_size=4", "data.max_train_samples=16", f"output_dir={tmp_path}")
    assert result.code == 0, result.err
    assert "instruction tuning" in result.out and "16 train / 100 eval examples" in result.out
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    answers = json.loads((run / "artifacts" / "answers.json").read_text())
    assert len(answers) == 100  # every held-out sentence answered, before and after
    assert {a["expected"] for a in answers} == {"foo", "bar"}  # the label words of the bundled test split
