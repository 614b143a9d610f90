"""hfx.runner.evaluation against transformers' own losses and generate() on tiny random models."""

from __future__ import annotations

import math

import pytest
import torch

from hfx.errors import HfxError
from hfx.metrics import wilson_interval
from hfx.runner.evaluation import evaluating, greedy_answers, loss_metrics, task_metrics
from hfx.testing import tiny_bert, tiny_llama, tiny_t5, tiny_tokenizer


def _batches(n: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(5, vocab, (2, 6), generator=g),
             "attention_mask": torch.ones(2, 6, dtype=torch.long)} for _ in range(n)]


def test_evaluating_restores_mode() -> None:
    model = tiny_bert()
    model.train()
    with evaluating(model):
        assert not model.training and not torch.is_grad_enabled()
    assert model.training and torch.is_grad_enabled()


def test_classifier_loss_and_accuracy_match_transformers() -> None:
    # Reference: transformers' BertForSequenceClassification loss (cross-entropy) and argmax accuracy,
    # computed here batch by batch; the mean of the per-batch losses is what loss_metrics reports.
    model = tiny_bert("sequence-classification", num_labels=3)
    batches = _batches(3, model.config.vocab_size)
    for i, b in enumerate(batches):
        b["labels"] = torch.tensor([i % 3, (i + 1) % 3])
    model.train()
    got = loss_metrics(model, [dict(b) for b in batches])
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        outs = [model(**b) for b in batches]
    want_loss = sum(o.loss.item() for o in outs) / 3
    want_acc = sum(int((o.logits.argmax(-1) == b["labels"]).sum()) for o, b in zip(outs, batches, strict=True)) / 6
    assert got["loss"] == pytest.approx(want_loss, rel=1e-6) and got["accuracy"] == pytest.approx(want_acc)
    assert got["accuracy"].n == 6  # type: ignore[attr-defined]  # an Estimate over the 6 labelled examples
    assert got["accuracy"].ci95 == wilson_interval(round(want_acc * 6), 6)  # type: ignore[attr-defined]


def test_causal_lm_perplexity_and_custom_loss() -> None:
    model = tiny_llama()
    data = [{"input_ids": b["input_ids"][0], "labels": b["input_ids"][0]} for b in _batches(4, model.config.vocab_size)]

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "labels")}

    got = task_metrics(model, data, collate, "causal-lm", batch_size=2)
    model.eval()
    with torch.no_grad():  # transformers' causal-LM loss, batch by batch
        want = sum(model(**collate(data[i:i + 2])).loss.item() for i in (0, 2)) / 2
    assert got["loss"] == pytest.approx(want, rel=1e-6) and "accuracy" not in got
    assert got["perplexity"] == pytest.approx(math.exp(want), rel=1e-6)
    doubled = task_metrics(model, data, collate, "causal-lm", 2, loss_fn=lambda m, b: 2 * m(**b).loss)
    assert doubled["loss"] == pytest.approx(2 * want, rel=1e-6)
    with pytest.raises(HfxError, match="evaluation set is empty"):
        task_metrics(model, [], collate, "causal-lm", batch_size=2)


@pytest.mark.parametrize("seq2seq", [False, True])
def test_greedy_answers_match_generate(seq2seq: bool) -> None:
    # Reference: transformers' generate() on each prompt alone (no padding), decoded the same way.
    tok = tiny_tokenizer("t5" if seq2seq else "llama")
    model = tiny_t5() if seq2seq else tiny_llama()
    prompts = ["a class", "the list of a class", "a"]
    got = greedy_answers(model, tok, prompts, max_new_tokens=4, seq2seq=seq2seq, batch_size=2)
    assert tok.padding_side == tiny_tokenizer("t5" if seq2seq else "llama").padding_side
    model.eval()
    for prompt, answer in zip(prompts, got, strict=True):
        enc = tok([prompt], return_tensors="pt")
        enc.pop("token_type_ids", None)
        out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out if seq2seq else out[:, enc["input_ids"].shape[1]:]
        assert answer == tok.batch_decode(new, skip_special_tokens=True)[0].strip()
    with pytest.raises(HfxError, match="max_new_tokens"):
        greedy_answers(model, tok, prompts, max_new_tokens=0, seq2seq=seq2seq)


def test_run_writes_intervals_and_labels_the_change(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """summary.json and before.json give each Estimate its n and Wilson interval; the table labels the change."""
    import json

    from hfx.runner.run import run
    from hfx.testing import save_tiny_model

    bert = save_tiny_model(tmp_path / "bert", "bert", "base")
    res = run(["plugin=finetune", f"model={bert}", "data.path=sentiment", "data.max_train_samples=16",
               "data.max_eval_samples=24", "data.max_length=16", "train.batch_size=8", "train.max_steps=1",
               f"output_dir={tmp_path / 'runs'}"])
    summary = json.loads((res.run_dir / "summary.json").read_text())
    for phase, written in (("before", json.loads((res.run_dir / "before.json").read_text())), ("after", None)):
        got = summary[phase]
        assert got["accuracy"] == res.__dict__[phase]["accuracy"] and got["accuracy_n"] == 24
        lo, hi = wilson_interval(round(got["accuracy"] * 24), 24)
        assert (got["accuracy_ci95_lo"], got["accuracy_ci95_hi"]) == pytest.approx((lo, hi), abs=1e-12)
        assert "loss_n" not in got  # the loss is no Estimate: no interval
        assert written is None or written == got
    assert set(res.after) == {"loss", "accuracy"}  # the recipe's own metrics, unchanged
    out = capsys.readouterr().out
    assert "95% CI" in out and ("not supported" in out or "supported" in out)
