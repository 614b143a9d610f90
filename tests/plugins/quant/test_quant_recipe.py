"""``hfx run plugin=quant`` and ``hfx run plugin=qat`` end to end on tiny random models saved to folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch

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


def test_quant_recipe_gptq_rows_calibrated_on_disjoint_text(tmp_path: Path) -> None:
    llama = save_tiny_model(tmp_path / "llama", "llama", "causal-lm")
    bert = save_tiny_model(tmp_path / "bert", "bert", "base")
    res = run(["plugin=quant", f"model={llama}", f"output_dir={tmp_path / 'runs'}", "quant.eval_windows=2",
               "quant.eval_window=32", "quant.table=[4:16,4:16:gptq]", "quant.bits=4", "quant.group_size=16",
               "quant.method=gptq", "quant.calibration_samples=4", "quant.calibration_window=32",
               "quant.calibration_sentences=64", f"quant.embedding_model={bert}", "quant.reference_rows=false",
               "quant.formats=false"])
    tables = json.loads((res.run_dir / "artifacts/quant_tables.json").read_text())
    ppl = {r["method"]: r for r in tables["perplexity"]}
    assert list(ppl) == ["fp32", "hfx int4", "hfx int4 gptq"]
    assert ppl["hfx int4 gptq"]["bits/param"] == ppl["hfx int4"]["bits/param"]  # same storage, other codes
    assert res.after["perplexity"] == ppl["hfx int4 gptq"]["perplexity"]  # the run's own setting: gptq
    assert [r["method"] for r in tables["embeddings"]] == ["hfx int4 min/max", "hfx int4 clip search",
                                                          "hfx int4 gptq (clip search)"]
    assert "GPTQ rows: calibrated on the 4 x 32 pydoc tokens after the 2 evaluated" in \
        (res.run_dir / "artifacts/quant_tables.md").read_text()


def test_calibration_text_is_disjoint_from_the_evaluated_text() -> None:
    # The evaluation reads the first eval_windows x eval_window tokens of the sorted pydoc topics and the first
    # 600 sentences; calibration must be the tokens and sentences right after them, never the same ones.
    from hfx.data.text import pydoc_sentences, pydoc_token_windows
    from hfx.testing import tiny_tokenizer
    from hfx_plugins.quant import QuantRunConfig
    from hfx_plugins.quant.calibration import lm_calibration, sentence_calibration

    tok = tiny_tokenizer("llama")
    cfg = QuantRunConfig(calibration_samples=3, calibration_window=40, calibration_sentences=5)
    evaluated = pydoc_token_windows(tok, 64, 4)  # (4, 64), what the recipe scores
    calib = torch.cat(lm_calibration(tok, cfg, evaluated.numel(), batch_size=2))  # (3, 40)
    stream = pydoc_token_windows(tok, 1, 4 * 64 + 3 * 40).view(-1)
    assert torch.equal(stream[:256].view(4, 64), evaluated)
    assert torch.equal(stream[256:].view(3, 40), calib)
    bert_tok = tiny_tokenizer("bert")
    (batch,) = sentence_calibration(bert_tok, cfg, n_evaluated=600)
    expected = bert_tok(pydoc_sentences(40, 300)[600:605], padding=True, truncation=True, max_length=128,
                        return_tensors="pt")
    assert torch.equal(batch["input_ids"], expected["input_ids"])


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
