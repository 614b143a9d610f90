"""``hfx run plugin=quant`` and ``hfx run plugin=qat`` end to end on tiny random models saved to folders."""

from __future__ import annotations

import json
from pathlib import Path

from hfx.runner.run import run
from hfx.testing import save_tiny_model


def test_quant_recipe_tables(tmp_path: Path) -> None:
    llama = save_tiny_model(tmp_path / "llama", "llama", "causal-lm")
    bert = save_tiny_model(tmp_path / "bert", "bert", "base")
    res = run(["plugin=quant", f"model={llama}", f"output_dir={tmp_path / 'runs'}", "quant.eval_windows=2",
               "quant.eval_window=32", "quant.table=[8:0,3:24]", "quant.bits=3", "quant.group_size=24",
               f"quant.embedding_model={bert}", "quant.reference_rows=false"])
    tables = json.loads((res.run_dir / "artifacts/quant_tables.json").read_text())
    ppl = {r["method"]: r for r in tables["perplexity"]}
    assert list(ppl) == ["fp32", "hfx int8", "hfx int3"]
    # hidden 32 = 24 + 8 and MLP 64 = 2 x 24 + 16: both have a short last group
    assert ppl["hfx int3"]["groups"] == "g24 (short last group for in=[32, 64])"
    assert res.after["perplexity"] == ppl["hfx int3"]["perplexity"]  # "after" is the run's own setting
    assert res.before["perplexity"] == ppl["fp32"]["perplexity"]
    assert [r["format"] for r in tables["formats"]][:2] == ["fp16", "bf16"]
    assert len(tables["embeddings"]) == 4  # two table entries x (min/max, clip search)
    assert (res.run_dir / "artifacts/model/model.safetensors").is_file()


def test_qat_recipe_table(tmp_path: Path) -> None:
    bert = save_tiny_model(tmp_path / "bert", "bert", "base")
    res = run(["plugin=qat", f"model={bert}", f"output_dir={tmp_path / 'runs'}", "train.max_steps=2",
               "train.batch_size=8", "data.max_train_samples=32", "data.max_eval_samples=16", "qat.qat_steps=2",
               "qat.compare_bits=[2]", "qat.bits=2", "qat.group_size=16"])
    rows = json.loads((res.run_dir / "artifacts/qat_table.json").read_text())
    assert [r["method"] for r in rows] == ["fp32", "PTQ int2 g16 (min/max)", "PTQ int2 g16 (clip search)",
                                          "QAT int2 g16 -> convert", "fp32 + 2 more steps (control)",
                                          "control -> PTQ int2 g16 (clip search)"]
    assert rows[3]["convert max diff"] <= 1e-5
    assert res.after["accuracy"] == rows[3]["accuracy"]
