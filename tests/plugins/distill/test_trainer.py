"""DistillationTrainer on tiny models of every family, offline caching, and input checks before training."""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import DataCollatorForLanguageModeling, LlamaConfig, LlamaForCausalLM, TrainingArguments

from hfx import DistillationTrainer, make_student
from hfx.data.collate import collator_for_task, tokenize_for_task
from hfx.errors import HfxError
from hfx.testing import tiny_model, tiny_tokenizer
from hfx_plugins.distill.cache import TeacherCache, TeacherCacheCollator, cache_teacher_outputs
from hfx_plugins.distill.objective import DistillationObjective

TEXTS = ["the function returns a new list of values", "a class may define methods", "yield",
         "the value of an expression is an object", "import a module by name", "raise an exception"] * 2


def _args(tmp_path, **kw) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, disable_tqdm=True)
    return TrainingArguments(**{**base, **kw})


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _causal(tok) -> tuple[datasets.Dataset, object]:
    ds = tokenize_for_task(datasets.Dataset.from_dict({"text": TEXTS}), tok, "causal-lm", 32)
    return ds, collator_for_task(tok, "causal-lm")


def test_causal_lm_trains_the_student_and_leaves_the_teacher_alone(tmp_path) -> None:
    teacher, tok = tiny_model("llama", "causal-lm")
    teacher.train()  # the trainer must switch it to eval mode and freeze it
    student = make_student(teacher)
    before_t, before_s = _snapshot(teacher), _snapshot(student)
    ds, collate = _causal(tok)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=_args(tmp_path), train_dataset=ds,
                                  eval_dataset=ds, data_collator=collate, processing_class=tok, alpha=0.5,
                                  temperature=2.0, hidden_weight=0.1)
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.evaluate()["eval_loss"]))  # Trainer.evaluate uses the same loss
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_t.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in before_s.items())
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and {"distill_kd", "distill_ce", "distill_cos"} <= set(logged[0])


@pytest.mark.parametrize("family,task", [("bert", "sequence-classification"), ("bert", "masked-lm"),
                                         ("t5", "seq2seq-lm"), ("bert", "base")])
def test_every_task_family_runs(tmp_path, family: str, task: str) -> None:
    teacher, tok = tiny_model(family, task)
    student = make_student(teacher)
    raw = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1] * 6, "target": ["yes", "no a list"] * 6})
    if task == "sequence-classification":
        ds, collate = tokenize_for_task(raw, tok, task, 32), collator_for_task(tok, task)
    elif task == "masked-lm":
        ds = tokenize_for_task(raw, tok, task, 32).remove_columns("special_tokens_mask")
        collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.3, seed=0)
    elif task == "seq2seq-lm":
        ds, collate = tokenize_for_task(raw, tok, task, 32), collator_for_task(tok, task, model=student)
    else:  # embedding regression on a bare encoder
        ds = raw.map(lambda b: tok(b["text"]), batched=True, remove_columns=raw.column_names)
        collate = collator_for_task(tok, "sequence-classification")
    alpha = 1.0 if task == "base" else 0.5
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=_args(tmp_path), train_dataset=ds,
                                  data_collator=collate, alpha=alpha)
    assert trainer.objective.task == {"base": "embedding"}.get(task, task)
    out = trainer.train()
    assert torch.isfinite(torch.tensor(out.training_loss))


def test_offline_cache_gives_the_online_loss_with_either_padding_side(tmp_path) -> None:
    teacher, tok = tiny_model("llama", "causal-lm")
    tok.padding_side = "left"  # cached rows are laid back by position mask, not by offset
    student = make_student(teacher)
    ds, collate = _causal(tok)
    obj = DistillationObjective("causal-lm", alpha=0.5, temperature=2.0)
    path = cache_teacher_outputs(teacher, ds, collate, tmp_path / "cache.safetensors", obj, batch_size=5)
    cache = TeacherCache(path)
    assert len(cache) == len(ds) and cache[0].shape == (len(ds[0]["input_ids"]), 1024)  # (L_0, V)
    examples = [ds[i] for i in range(4)]
    online, _, _ = obj(student, collate(examples), teacher)
    offline, _, _ = obj(student, TeacherCacheCollator(collate, "causal-lm")([{**e, "teacher_logits": cache[i]}
                                                                               for i, e in enumerate(examples)]))
    assert offline.item() == pytest.approx(online.item(), abs=1e-6)
    trainer = DistillationTrainer(model=student, args=_args(tmp_path), train_dataset=ds, data_collator=collate,
                                  teacher_cache=path, alpha=0.5, temperature=2.0)
    assert trainer.teacher is None
    trainer.train()


def test_cache_for_another_data_set_or_vocabulary_is_refused(tmp_path) -> None:
    teacher, tok = tiny_model("llama", "causal-lm")
    ds, collate = _causal(tok)
    obj = DistillationObjective("causal-lm", alpha=1.0)
    path = cache_teacher_outputs(teacher, ds.select(range(5)), collate, tmp_path / "c.safetensors", obj)
    with pytest.raises(HfxError, match="the teacher cache has 5 examples"):
        DistillationTrainer(model=make_student(teacher), args=_args(tmp_path), train_dataset=ds,
                            data_collator=collate, teacher_cache=path, alpha=1.0)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                         intermediate_size=64))
    with pytest.raises(HfxError, match="vocabulary of 1024 tokens"):
        DistillationTrainer(model=other, args=_args(tmp_path), train_dataset=ds.select(range(5)),
                            data_collator=collate, teacher_cache=path, alpha=1.0)


def test_different_vocabularies_or_tokenizers_fail_before_training(tmp_path) -> None:
    teacher, tok = tiny_model("llama", "causal-lm")
    ds, collate = _causal(tok)
    small = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                         intermediate_size=64))
    with pytest.raises(HfxError, match="vocabulary of 512 tokens, the teacher 1024") as err:
        DistillationTrainer(model=small, teacher_model=teacher, args=_args(tmp_path), train_dataset=ds,
                            data_collator=collate)
    assert "\n" not in str(err.value)
    with pytest.raises(HfxError, match="tokenizers differ"):
        DistillationTrainer(model=make_student(teacher), teacher_model=teacher, args=_args(tmp_path),
                            train_dataset=ds, data_collator=collate, processing_class=tok,
                            teacher_processing_class=tiny_tokenizer("bert"))


@pytest.mark.parametrize("kw,match", [({"temperature": 0.0}, "temperature must be > 0"),
                                      ({"alpha": 1.2}, r"alpha must be in \[0, 1\]"),
                                      ({"alpha": -0.5}, r"alpha must be in \[0, 1\]"),
                                      ({"teacher_model": None}, "needs teacher_model")])
def test_bad_arguments(tmp_path, kw: dict, match: str) -> None:
    teacher, tok = tiny_model("llama", "causal-lm")
    ds, collate = _causal(tok)
    args = {"model": make_student(teacher), "teacher_model": teacher, "args": _args(tmp_path),
            "train_dataset": ds, "data_collator": collate, **kw}
    with pytest.raises(HfxError, match=match):
        DistillationTrainer(**args)


def test_larger_student_warns_but_trains(tmp_path) -> None:
    teacher, tok = tiny_model("llama", "causal-lm")
    ds, collate = _causal(tok)
    big = LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=128, pad_token_id=tok.pad_token_id))
    with pytest.warns(UserWarning, match="more than its teacher"):
        DistillationTrainer(model=big, teacher_model=teacher, args=_args(tmp_path, max_steps=1), train_dataset=ds,
                            data_collator=collate).train()
