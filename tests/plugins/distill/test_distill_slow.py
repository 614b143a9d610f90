"""The real offline models (slow): the minilm student as a sentence-transformers model, smollm2 half depth."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_minilm_student_saved_by_the_recipe_loads_in_sentence_transformers(tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    from hfx.models.loading import load_model
    from hfx.runner.run import run
    from hfx_plugins.distill.objective import DistillationObjective

    res = run(["plugin=distill", "train.max_steps=3", "data.max_train_samples=64", "distill.baseline=false",
               "distill.speed_repeats=1", f"output_dir={tmp_path}"])
    path = res.run_dir / "artifacts" / "student"
    st = SentenceTransformer(str(path), device="cpu")
    texts = ["The with statement wraps a block.", "Names refer to objects."]
    student, tok = load_model(str(path), "base")
    ours = DistillationObjective("embedding", alpha=1.0).embed(student.eval(), dict(tok(texts, padding=True, return_tensors="pt")))
    assert student.config.num_hidden_layers == 3
    assert (st.encode(texts, convert_to_tensor=True).cpu() - ours.detach()).abs().max().item() < 1e-5  # ST's own encode


def test_smollm2_half_depth_student_has_15_layers_and_a_working_cache() -> None:
    from hfx.models.loading import load_model
    from hfx_plugins.distill.student import make_student, param_count

    teacher, tok = load_model("smollm2-135m", "causal-lm")
    student = make_student(teacher).eval()
    assert student.config.num_hidden_layers == 15 and param_count(student) < 0.65 * param_count(teacher)
    ids = tok(["The capital of France is"], return_tensors="pt")["input_ids"]
    a = student.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
    b = student.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(a, b)
