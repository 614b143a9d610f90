"""``hfx run plugin=distill`` end to end on tiny models saved to disk (the real presets are in test_slow.py)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from hfx.errors import HfxError
from hfx.runner.run import run
from hfx.testing import save_tiny_model


def _run(tmp_path, *args: str):
    return run([*args, f"output_dir={tmp_path / 'runs'}", "distill.speed_repeats=1"])


def test_embedding_run_writes_student_cache_and_comparison(tmp_path) -> None:
    model = save_tiny_model(tmp_path / "bert", "bert", "base")
    # The preset keeps minilm's layers 0, 4, 5; this 2-layer model takes make_student's default (every other one).
    res = _run(tmp_path, "plugin=distill", f"model={model}", "train.max_steps=3", "train.batch_size=8",
               "data.max_train_samples=48", "distill.eval_sentences=20", "train.eval_batch_size=32", "distill.layers=[]")
    rows = json.loads((res.run_dir / "comparison.json").read_text())
    assert [r["model"] for r in rows] == ["teacher", "student (distilled)", "student (no teacher)", "student (untrained)"]
    assert rows[0]["layers"] == 2 and rows[1]["layers"] == 1 and rows[1]["parameters"] < rows[0]["parameters"]
    assert rows[0]["spearman vs teacher"] == 1.0 and -1.0 <= rows[1]["spearman vs teacher"] <= 1.0
    assert (res.run_dir / "teacher_cache.safetensors").is_file()
    student = AutoModel.from_pretrained(res.run_dir / "artifacts" / "student")
    assert student.config.num_hidden_layers == 1
    assert set(res.after) == {"spearman_vs_teacher", "sentiment_accuracy", "pairs_spearman"}
    assert rows[0]["pairs kept"] == 1.0 and -1.0 <= rows[1]["pairs spearman"] <= 1.0
    assert "no_teacher_spearman_vs_teacher" in res.summary["train"] and res.summary["train"]["speedup"] > 0
    logged = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("no_teacher_train_loss" in r for r in logged)  # the baseline's curve is kept apart


def test_docstring_and_sentiment_sentences_extend_training_and_baseline_has_its_own_learning_rate(tmp_path) -> None:
    from hfx.data.text import pydoc_sentences
    from hfx_plugins.distill.cache import TeacherCache
    from hfx_plugins.distill.metrics import held_out_pairs, without_pair_sentences

    model = save_tiny_model(tmp_path / "bert", "bert", "base")
    res = _run(tmp_path, "plugin=distill", f"model={model}", "train.max_steps=3", "train.batch_size=8",
               "distill.eval_sentences=20", "train.eval_batch_size=64", "distill.docstring_sentences=30",
               "distill.sentiment_sentences=25",
               "train.learning_rate=0.001", "train.warmup_steps=0", "train.log_every=1",
               "distill.baseline_learning_rate=0.0005", "distill.layers=[1]")
    pydoc_train = without_pair_sentences(pydoc_sentences()[:-20], held_out_pairs())
    # the teacher labels all three kinds of sentence
    assert len(TeacherCache(res.run_dir / "teacher_cache.safetensors")) == len(pydoc_train) + 30 + 25
    logged = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in logged if "lr" in r]
    base_lrs = [r["no_teacher_lr"] for r in logged if "no_teacher_lr" in r]
    assert base_lrs and max(base_lrs) <= 0.0005 < max(lrs) <= 0.001  # linear decay from each peak


def test_causal_lm_run_reports_perplexities(tmp_path) -> None:
    model = save_tiny_model(tmp_path / "llama", "llama", "causal-lm")
    res = _run(tmp_path, "plugin=distill", f"model={model}", "task=causal-lm", "data.path=pydoc",
               "data.max_length=32", "data.max_train_samples=16", "data.max_eval_samples=8", "train.max_steps=2",
               "train.batch_size=4", "distill.cache_teacher=false", "distill.alpha=0.5", "distill.layers=[]")
    rows = json.loads((res.run_dir / "comparison.json").read_text())
    assert all(r["perplexity"] > 1 for r in rows)
    assert rows[0]["kept"] == 1.0
    student = AutoModelForCausalLM.from_pretrained(res.run_dir / "artifacts" / "student")
    assert student.config.num_hidden_layers == 1
    with torch.no_grad():
        assert student(input_ids=torch.tensor([[2, 10, 11]])).logits.shape == (1, 3, 1024)


@pytest.mark.parametrize("override,match", [("distill.temperature=0", "distill.temperature must be > 0"),
                                            ("distill.alpha=2", r"distill.alpha must be in \[0, 1\]"),
                                            ("task=masked-lm", "trains task=base"),
                                            ("distill.docstring_sentences=-1", "docstring_sentences must be >= 0"),
                                            ("distill.sentiment_sentences=-1", "sentiment_sentences must be >= 0"),
                                            ("distill.baseline_learning_rate=-1", "baseline_learning_rate must be >= 0"),
                                            ("distill.layers=[0,5]", r"layers \[5\] do not exist in .*pick layers of this")])
def test_bad_config_is_one_line_error(tmp_path, override: str, match: str) -> None:
    model = save_tiny_model(tmp_path / "bert", "bert", "base")
    with pytest.raises(HfxError, match=match) as err:
        _run(tmp_path, "plugin=distill", f"model={model}", override)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # failed before any folder
