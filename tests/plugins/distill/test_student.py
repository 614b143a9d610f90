"""make_student: which layers are kept, that the student works (KV cache, save/load), and bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

import hfx
from hfx.errors import HfxError
from hfx.protocols import applied
from hfx.testing import tiny_model, tiny_tokenizer
from hfx_plugins.distill.config import DistillConfig
from hfx_plugins.distill.student import make_student, param_count


def _six_layer_bert() -> BertForMaskedLM:
    cfg = BertConfig(vocab_size=1024, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    return BertForMaskedLM(cfg).eval()


def test_default_keeps_every_other_layer_like_distilbert() -> None:
    teacher = _six_layer_bert()
    student = make_student(teacher)
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 6  # teacher untouched
    for j, i in enumerate([0, 2, 4]):  # DistilBERT: "one layer out of two"
        for (name, a), (_, b) in zip(student.bert.encoder.layer[j].state_dict().items(),
                                     teacher.bert.encoder.layer[i].state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert student.bert.embeddings.word_embeddings.weight.data_ptr() != teacher.bert.embeddings.word_embeddings.weight.data_ptr()
    assert all(p.requires_grad for p in student.parameters())
    assert param_count(student) < param_count(teacher)


def test_chosen_layers_and_save_pretrained_round_trip(tmp_path) -> None:
    teacher = _six_layer_bert()
    student = make_student(teacher, layers=[5, 1]).eval()
    assert torch.equal(student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[5].output.dense.weight)
    student.save_pretrained(tmp_path)
    again = BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, student(input_ids=ids).logits)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_decoder_student_generates_with_a_consistent_kv_cache(family: str) -> None:
    # Keeping layer 1 alone: its attention's layer_idx must become 0, or the 1-layer cache is indexed at 1.
    teacher, tok = tiny_model(family, "causal-lm")
    student = make_student(teacher, layers=[1]).eval()
    ids = tok(["the value of the expression is"], return_tensors="pt")["input_ids"]
    cached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_t5_cuts_both_stacks_and_keeps_the_position_bias_layer() -> None:
    teacher, tok = tiny_model("t5", "seq2seq-lm")
    student = make_student(teacher)
    assert (student.config.num_layers, student.config.num_decoder_layers) == (1, 1)
    assert len(student.encoder.block) == 1 and len(student.decoder.block) == 1
    batch = tok(["a list"], return_tensors="pt")
    with torch.no_grad():
        out = student(**batch, decoder_input_ids=torch.zeros(1, 2, dtype=torch.long))
    assert out.logits.shape == (1, 2, 1024)
    with pytest.raises(HfxError, match="layer 0 holds the relative position bias"):
        make_student(teacher, layers=[1])


def test_student_from_a_config_is_fresh_and_smaller() -> None:
    teacher, _ = tiny_model("llama", "causal-lm")
    student = make_student(teacher, config={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32,
                                            "num_attention_heads": 2, "num_key_value_heads": 1})
    assert type(student) is type(teacher) and student.config.hidden_size == 16
    assert param_count(student) < param_count(teacher)


@pytest.mark.parametrize("kwargs,match", [
    ({"layers": []}, "layers is empty"),
    ({"layers": [0, 0]}, "repeats a layer"),
    ({"layers": [7]}, r"do not exist"),
    ({"layers": [0], "config": {"num_hidden_layers": 1}}, "not both"),
    ({"config": {"vocab_size": 99}}, "vocab_size 99 differs"),
    ({"config": {"no_such_field": 1}}, "not an attribute"),
])
def test_bad_student_requests(kwargs: dict, match: str) -> None:
    teacher, _ = tiny_model("bert", "masked-lm")
    with pytest.raises(HfxError, match=match):
        make_student(teacher, **kwargs)


def test_a_student_larger_than_its_teacher_warns() -> None:
    teacher, _ = tiny_model("bert", "masked-lm")
    with pytest.warns(UserWarning, match="more than its teacher"):
        make_student(teacher, config={"num_hidden_layers": 4})


def test_make_student_save_load_round_trip(tmp_path) -> None:
    """hfx.make_student records distill on the student, so hfx.save / hfx.load round-trip it exactly."""
    teacher, tok = tiny_model("llama", "causal-lm")
    student = hfx.make_student(teacher, layers=[1])
    assert student is not teacher and student.config.num_hidden_layers == 1
    assert applied(student)[-1] == ("distill", DistillConfig(layers=[1]))
    assert applied(teacher) == []  # the teacher is untouched
    hfx.save(student, tmp_path / "s")
    loaded = hfx.load(teacher, tmp_path / "s")
    ids = tok(["a class"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=ids).logits, student.eval()(input_ids=ids).logits)
    assert applied(loaded)[-1] == ("distill", DistillConfig(layers=[1]))
    assert tiny_tokenizer("llama").vocab_size == loaded.get_input_embeddings().num_embeddings


def test_hfx_apply_distill_points_to_make_student() -> None:
    """A student is a new model, so distill has no drop-in apply: hfx.apply says where to go instead."""
    with pytest.raises(HfxError) as err:
        hfx.apply(tiny_model("llama", "causal-lm")[0], "distill", layers=[1])
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "has no drop-in apply()" in msg and "hfx.make_student(teacher)" in msg


def test_saved_config_holds_only_distill_config_fields(tmp_path) -> None:
    """A run config's fields (baseline, eval_sentences, ...) are not written beside the student."""
    import dataclasses
    import json

    from hfx_plugins.distill.config import DistillRunConfig
    from hfx_plugins.distill.io import MARKER, save

    save(make_student(tiny_model("bert", "base")[0]), tmp_path, DistillRunConfig(alpha=1.0, eval_sentences=20))
    saved = json.loads((tmp_path / MARKER).read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(DistillConfig)} and saved["alpha"] == 1.0


def test_held_out_pairs() -> None:
    from hfx_plugins.distill.metrics import held_out_pairs, without_pair_sentences

    real = held_out_pairs()  # the bundled test split: 109 rows x (positive, related, negative)
    assert len(real) == 327 and {s for _, _, s in real} == {0.0, 0.5, 1.0}
    assert without_pair_sentences([real[0][0], "not a pair sentence"], real) == ["not a pair sentence"]
