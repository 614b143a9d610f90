"""The ``finetune`` plugin: its reference checks, and ``hfx run`` end to end on the three tiny families.

References: the checks compare hfx's heads and losses with transformers' task models (plugins/finetune/
checks.py); the end-to-end tests reload the saved artifacts with transformers' Auto classes and recompute the
"after" metrics with transformers' own losses, or check them by hand (perplexity = exp(loss), accuracy =
correct / examples). Each run uses a few steps and a few dozen examples so the module stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from hfx.data.loading import DataConfig, load_data
from hfx_plugins.finetune.checks import checks
from hfx_plugins.finetune.heads import SequenceClassifier
from hfx_plugins.finetune.losses import seq2seq_loss

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
checks_module = importlib.import_module("hfx_plugins.finetune.checks")  # the package re-exports checks()
FAST = ["data.max_train_samples=32", "train.batch_size=8", "train.eval_batch_size=64"]


def the_run(out_dir: Path) -> Path:
    (run_dir,) = list(out_dir.iterdir())
    return run_dir


def assert_complete_run(run_dir: Path, max_steps: int) -> dict:
    """config.yaml, metrics.jsonl, summary.json, curves.png and artifacts/model are there; returns the summary."""
    assert run_dir.name.endswith("-finetune")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.plugin == ["finetune"] and cfg.train.max_steps == max_steps
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and "eval_loss" in records[0]  # evaluation before training
    assert any(r["step"] == max_steps and "train_loss" in r for r in records)  # the last step is always logged
    assert records[-1]["step"] == max_steps and "eval_loss" in records[-1]  # evaluation after training
    assert (run_dir / "curves.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["before"]["loss"] == records[0]["eval_loss"]
    assert summary["after"]["loss"] == records[-1]["eval_loss"]
    assert summary["artifacts"] == ["artifacts/model"]
    assert (run_dir / "artifacts" / "model" / "model.safetensors").is_file()
    assert math.isfinite(summary["train"]["train_loss"])
    return summary


# ---------------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize("check", checks(), ids=lambda c: c.name)
def test_reference_check_passes(check) -> None:
    diff = check.run()
    assert math.isfinite(diff) and diff <= check.tolerance, (check.name, diff)


def test_checks_detect_a_wrong_causal_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    # Control: a causal-LM loss without the one-token shift must fail the check by far.
    monkeypatch.setattr(checks_module, "causal_lm_loss", seq2seq_loss)
    check = next(c for c in checks() if c.name.startswith("causal LM loss"))
    assert check.run() > 100 * check.tolerance


def test_checks_detect_a_wrong_pooling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Control: pooling the [CLS] hidden state without BERT's pooler layer must fail the classifier check.
    class NoPooler(SequenceClassifier):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.uses_pooler = False

    monkeypatch.setattr(checks_module, "SequenceClassifier", NoPooler)
    check = next(c for c in checks() if c.name.startswith("bert classifier (single_label"))
    assert check.run() > 100 * check.tolerance


def test_hfx_validate_finetune(cli: Callable) -> None:
    res = cli("validate", "plugin=finetune")
    assert res.code == 0, res.out + res.err
    result_cells = [line for line in res.out.splitlines() if "│ finetune " in line]
    assert len(result_cells) == len(checks())
    assert all("pass" in line and "FAIL" not in line for line in result_cells)
    assert "transformers" in res.out


# ------------------------------------------------------------------------------------------ end to end


def test_run_sequence_classification_on_tiny_bert(cli: Callable, tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    res = cli("run", "plugin=finetune", f"model={tiny_bert_dir}", "train.max_steps=3", f"output_dir={out}",
              "data.max_eval_samples=32", *FAST)
    assert res.code == 0, res.err[-2000:]
    summary = assert_complete_run(the_run(out), 3)
    model_dir = the_run(out) / "artifacts" / "model"
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert hf.config.num_labels == 2
    # Recompute "after" with transformers on the same 32 eval examples (sentiment's test split, max_length 64
    # from the default preset): loss is transformers' cross-entropy, accuracy = correct / 32.
    eval_set = load_data(DataConfig(path="sentiment", max_eval_samples=32))["eval"]
    enc = tok(list(eval_set["text"]), truncation=True, max_length=64, padding=True, return_tensors="pt")
    labels = torch.tensor(list(eval_set["label"]))
    with torch.no_grad():
        out_hf = hf(**enc, labels=labels)
    assert summary["after"]["loss"] == pytest.approx(out_hf.loss.item(), abs=1e-5)
    correct = (out_hf.logits.argmax(-1) == labels).sum().item()
    assert summary["after"]["accuracy"] == pytest.approx(correct / 32)


def test_run_causal_lm_on_tiny_llama(cli: Callable, tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    res = cli("run", "plugin=finetune", f"model={tiny_llama_dir}", "task=causal-lm", "data.path=pydoc",
              "data.max_train_samples=32", "data.max_eval_samples=8", "train.max_steps=3", "train.batch_size=8",
              f"output_dir={out}")
    assert res.code == 0, res.err[-2000:]
    summary = assert_complete_run(the_run(out), 3)
    for phase in ("before", "after"):  # by definition: perplexity = exp(mean token cross-entropy)
        assert summary[phase]["perplexity"] == pytest.approx(math.exp(summary[phase]["loss"]), rel=1e-9)
    # A random tiny model with std-0.02 weights predicts nearly uniformly over its 1024-word vocabulary, so its
    # loss starts near ln(1024) = 6.93.
    assert summary["before"]["loss"] == pytest.approx(math.log(1024), abs=0.1)
    hf = AutoModelForCausalLM.from_pretrained(the_run(out) / "artifacts" / "model")
    assert type(hf).__name__ == "LlamaForCausalLM"


def test_run_seq2seq_on_tiny_t5(cli: Callable, tiny_t5_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    res = cli("run", "plugin=finetune", "preset=seq2seq", f"model={tiny_t5_dir}", "train.max_steps=2",
              "data.max_eval_samples=8", "finetune.eval_generations=8", f"output_dir={out}", *FAST)
    assert res.code == 0, res.err[-2000:]
    summary = assert_complete_run(the_run(out), 2)
    for phase in ("before", "after"):  # hits / 8 generations
        assert summary[phase]["exact_match"] * 8 == pytest.approx(round(summary[phase]["exact_match"] * 8))
    cfg = OmegaConf.load(the_run(out) / "config.yaml")
    assert cfg.task == "seq2seq-lm" and cfg.data.target_column == "label_text"  # from the seq2seq preset
    hf = AutoModelForSeq2SeqLM.from_pretrained(the_run(out) / "artifacts" / "model")
    assert type(hf).__name__ == "T5ForConditionalGeneration"


def test_run_regression_with_one_label(cli: Callable, tiny_bert_dir: Path, tmp_path: Path) -> None:
    """finetune.num_labels=1 on 0/1 labels is regression (transformers' rule): MSE, no accuracy."""
    out = tmp_path / "runs"
    res = cli("run", "plugin=finetune", f"model={tiny_bert_dir}", "finetune.num_labels=1", "train.max_steps=2",
              "data.max_eval_samples=16", f"output_dir={out}", *FAST)
    assert res.code == 0, res.err[-2000:]
    summary = assert_complete_run(the_run(out), 2)
    assert "accuracy" not in summary["after"]
    model_dir = the_run(out) / "artifacts" / "model"
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert hf.config.num_labels == 1
    # transformers computes MSELoss for num_labels == 1; recompute "after" with it.
    eval_set = load_data(DataConfig(path="sentiment", max_eval_samples=16))["eval"]
    enc = tok(list(eval_set["text"]), truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        loss = hf(**enc, labels=torch.tensor(list(eval_set["label"]), dtype=torch.float)).loss.item()
    assert summary["after"]["loss"] == pytest.approx(loss, abs=1e-5)


def test_labels_beyond_num_labels(cli: Callable, tiny_bert_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "three-classes"
    data.mkdir()
    rows = [{"text": f"example number {i}", "label": i % 3} for i in range(12)]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "runs"
    res = cli("run", "plugin=finetune", f"model={tiny_bert_dir}", f"data.path={data}", f"output_dir={out}")
    assert res.code == 2 and len(res.err_lines) == 1 and "Traceback" not in res.err
    assert "labels go up to 2 but finetune.num_labels=2; set finetune.num_labels=3" in res.err
    assert not out.exists()


def test_bare_encoder_decoder_has_no_head_to_add() -> None:
    import hfx
    from hfx.errors import HfxError
    from hfx.testing import tiny_model

    with pytest.raises(HfxError, match="task=seq2seq-lm"):
        hfx.apply(tiny_model("t5", "base")[0], "finetune")


def test_freeze_base_trains_only_the_head() -> None:
    import hfx
    from hfx.testing import tiny_model

    model = hfx.apply(tiny_model("bert", "base")[0], "finetune", num_labels=3, freeze_base=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}


def test_apply_refuses_a_run_only_field() -> None:
    """eval_generations belongs to FinetuneRunConfig (the recipe's evaluation), not to hfx.apply."""
    import hfx
    from hfx.errors import HfxError
    from hfx.testing import tiny_model

    with pytest.raises(HfxError) as err:
        hfx.apply(tiny_model("bert", "base")[0], "finetune", eval_generations=8)
    assert len(str(err.value).splitlines()) == 1
    assert "finetune.eval_generations is a field of `hfx run`" in str(err.value)


def test_saved_config_holds_only_apply_fields(tmp_path: Path) -> None:
    """The folder records FinetuneConfig's fields; a run config's extra fields (or an older file's) are not kept."""
    import hfx
    from hfx.testing import tiny_model
    from hfx_plugins.finetune.config import FinetuneConfig, FinetuneRunConfig
    from hfx_plugins.finetune.io import MARKER, load, save

    model = hfx.apply(tiny_model("bert", "base")[0], "finetune", num_labels=3)
    save(model, tmp_path / "m", FinetuneRunConfig(num_labels=3, eval_generations=5))
    assert set(json.loads((tmp_path / "m" / MARKER).read_text())) == {f.name for f in dataclasses.fields(FinetuneConfig)}
    _, cfg = load(tiny_model("bert", "base")[0], tmp_path / "m")
    assert cfg == FinetuneConfig(num_labels=3)
