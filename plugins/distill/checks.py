"""``hfx validate plugin=distill``: the distillation losses and the student against their references.

- trl's ``GKDTrainer.generalized_jsd_loss`` (trl.experimental.gkd): hfx's divergence term / T^2 at beta 0
  (forward KL), 1 (reverse KL) and 0.5 (JSD), with ignored positions (labels -100) masked;
- DistilBERT's soft-target term as written in transformers' ``examples/research_projects/distillation/
  distiller.py``: ``KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)) * T**2`` on the
  masked-LM positions (reference: torch, whose KLDivLoss it is);
- sentence embeddings (mean pooling + Normalize) against sentence-transformers' ``encode``;
- ``make_student`` keeping every layer reproduces the teacher's logits exactly (transformers).
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.nn.functional as F

from hfx.data.collate import IGNORE_INDEX
from hfx.validate import Check
from hfx_plugins.distill.losses import kd_loss
from hfx_plugins.distill.objective import DistillationObjective

__all__ = ["checks"]

TOL = 1e-5  # float32; trl builds the JSD mixture with a stack + logsumexp in another order


def _logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, 5, 11, generator=g) * 2  # (B, T, V)
    t = torch.randn(2, 5, 11, generator=g) * 2
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, 3:] = IGNORE_INDEX  # padding
    labels[1, 0] = IGNORE_INDEX  # an ignored prompt token
    return s, t, labels


def _vs_trl(beta: float, temperature: float) -> float:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    s, t, labels = _logits()
    kind = {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta, "jsd")
    ours = kd_loss(s, t, labels != IGNORE_INDEX, kind, beta, temperature) / temperature**2
    ref = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=temperature)
    return (ours - ref).abs().item()


def _vs_distilbert(temperature: float = 2.0) -> float:
    s, t, labels = _logits(1)
    mask = labels != IGNORE_INDEX  # (B, T): DistilBERT keeps the MLM positions
    s_sel, t_sel = s[mask], t[mask]  # (N, V)
    ref = torch.nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s_sel / temperature, dim=-1), F.softmax(t_sel / temperature, dim=-1)) * temperature**2
    return (kd_loss(s, t, mask, "forward_kl", temperature=temperature) - ref).abs().item()


def _vs_sentence_transformers() -> float:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from hfx.testing import save_tiny_model, tiny_model

    texts = ["the function returns a new list", "a class may define its own methods", "yield"]
    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_model(tmp, "bert", "base")
        st = SentenceTransformer(modules=[Transformer(tmp), Pooling(32, "mean"), Normalize()], device="cpu")
        ref = st.encode(texts, convert_to_tensor=True, batch_size=8)
    model, tok = tiny_model("bert", "base")
    obj = DistillationObjective("embedding", alpha=1.0)
    with torch.no_grad():
        ours = obj.embed(model, dict(tok(texts, padding=True, return_tensors="pt")))
    return (ours - ref.cpu()).abs().max().item()


def _full_student_is_teacher() -> float:
    from hfx.testing import tiny_model
    from hfx_plugins.distill.student import make_student

    worst = 0.0
    for family in ("bert", "llama", "gpt2"):
        teacher, tok = tiny_model(family)
        student = make_student(teacher, layers=[0, 1]).eval()
        batch = dict(tok(["the value of an expression", "a list"], padding=True, return_tensors="pt"))
        with torch.no_grad():
            worst = max(worst, (student(**batch).logits - teacher(**batch).logits).abs().max().item())
    return worst


def checks() -> list[Check]:
    """``hfx validate plugin=distill``: the KD losses vs trl's ``generalized_jsd_loss`` and DistilBERT's KL
    term, mean-pooled embeddings vs sentence-transformers, and a full-depth student vs its teacher.
    """
    return [
        Check("forward KL / T^2 vs generalized_jsd_loss(beta=0, T=2)", "trl", TOL, lambda: _vs_trl(0.0, 2.0)),
        Check("reverse KL / T^2 vs generalized_jsd_loss(beta=1, T=2)", "trl", TOL, lambda: _vs_trl(1.0, 2.0)),
        Check("JSD / T^2 vs generalized_jsd_loss(beta=0.5, T=0.9)", "trl", TOL, lambda: _vs_trl(0.5, 0.9)),
        Check("KD term vs DistilBERT KLDivLoss(batchmean)*T^2 on MLM positions", "torch", TOL, _vs_distilbert),
        Check("mean-pooled normalised embedding vs SentenceTransformer.encode", "sentence-transformers", TOL,
              _vs_sentence_transformers),
        Check("make_student(all layers) logits vs the teacher's (bert, llama, gpt2)", "transformers", 0.0,
              _full_student_is_teacher),
    ]
