"""The distillation loss terms: by hand, against trl's generalized JSD, and DistilBERT's formula."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from hfx.data.collate import IGNORE_INDEX
from hfx.errors import HfxError
from hfx_plugins.distill.losses import divergence, hidden_cosine_loss, kd_loss
from hfx_plugins.distill.objective import DistillationObjective

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _random(seed: int = 0, B: int = 3, T: int = 6, V: int = 13) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(B, T, V, generator=g) * 3, torch.randn(B, T, V, generator=g) * 3
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 4:] = IGNORE_INDEX
    labels[2, :2] = IGNORE_INDEX
    return s, t, labels


class _Fixed(nn.Module):
    """A 'classifier' whose logits are a fixed parameter; its loss is plain cross-entropy."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False) -> SequenceClassifierOutput:
        loss = F.cross_entropy(self.logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=self.logits)


def test_distilbert_triple_loss_by_hand() -> None:
    # Teacher logits [2, 0], student [0, 0], T = 2, label 0, alpha = 0.5. By hand:
    #   p_t = softmax([1, 0]) = [e/(1+e), 1/(1+e)] = [0.7310586, 0.2689414], p_s = [0.5, 0.5]
    #   KL(p_t || p_s) = 0.7310586 ln(1.4621172) + 0.2689414 ln(0.5378828) = 0.2777185 - 0.1667745 = 0.1109441
    #   T^2 KL = 0.4437763; CE(student, 0) = ln 2 = 0.6931472
    #   loss = 0.5 * 0.4437763 + 0.5 * 0.6931472 = 0.5684618
    obj = DistillationObjective("sequence-classification", alpha=0.5, temperature=2.0)
    batch = {"input_ids": torch.zeros(1, 1, dtype=torch.long), "labels": torch.tensor([0])}
    loss, terms, _ = obj(_Fixed([[0.0, 0.0]]), batch, _Fixed([[2.0, 0.0]]))
    assert terms["kd"].item() == pytest.approx(0.4437763, abs=1e-6)
    assert terms["ce"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert loss.item() == pytest.approx(0.5684618, abs=1e-6)


def test_teacher_gets_no_gradient_and_student_does() -> None:
    student, teacher = _Fixed([[0.0, 1.0]]), _Fixed([[2.0, 0.0]])
    obj = DistillationObjective("sequence-classification", alpha=0.5)
    loss, _, _ = obj(student, {"input_ids": torch.zeros(1, 1, dtype=torch.long), "labels": torch.tensor([0])}, teacher)
    loss.backward()
    assert teacher.logits.grad is None and student.logits.grad is not None
    assert not teacher.training  # switched to eval mode by the objective


@pytest.mark.parametrize("beta,kind", [(0.0, "forward_kl"), (1.0, "reverse_kl"), (0.5, "jsd"), (0.1, "jsd")])
@pytest.mark.parametrize("temperature", [0.9, 1.0, 2.0])
def test_matches_trl_generalized_jsd(beta: float, kind: str, temperature: float) -> None:
    # Reference: trl 1.16 GKDTrainer.generalized_jsd_loss (trl.experimental.gkd), which has no T^2 factor.
    from trl.experimental.gkd import GKDTrainer

    s, t, labels = _random()
    ref = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=temperature)
    ours = kd_loss(s, t, labels != IGNORE_INDEX, kind, beta, temperature)
    assert (ours / temperature**2).item() == pytest.approx(ref.item(), abs=1e-6)


def test_kd_term_matches_distilbert_kldivloss_on_masked_positions() -> None:
    # Reference: transformers' examples/research_projects/distillation/distiller.py (mlm branch):
    # KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)) * T^2 on rows selected by the MLM mask.
    s, t, labels = _random(3)
    mask = labels != IGNORE_INDEX
    ref = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s[mask] / 2.0, -1), F.softmax(t[mask] / 2.0, -1)) * 4.0
    assert kd_loss(s, t, mask, "forward_kl", temperature=2.0).item() == pytest.approx(ref.item(), abs=1e-6)


def test_divergences_are_zero_for_equal_distributions_and_ordered() -> None:
    s, _, _ = _random(4)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert divergence(s, s.clone(), kind).abs().max().item() < 1e-6
    # a two-class example by hand: p = [0.9, 0.1], q = [0.5, 0.5]
    p, q = torch.log(torch.tensor([0.9, 0.1])), torch.log(torch.tensor([0.5, 0.5]))
    fwd = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # KL(p || q) = 0.3681
    rev = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # KL(q || p) = 0.5108
    assert divergence(q, p, "forward_kl").item() == pytest.approx(fwd, abs=1e-6)  # (student q, teacher p)
    assert divergence(q, p, "reverse_kl").item() == pytest.approx(rev, abs=1e-6)


def test_padding_and_ignored_positions_do_not_count() -> None:
    s, t, labels = _random(5)
    mask = labels != IGNORE_INDEX
    s2 = s.clone()
    s2[~mask] = torch.randn_like(s2[~mask]) * 100  # garbage where nothing counts
    assert kd_loss(s2, t, mask).item() == pytest.approx(kd_loss(s, t, mask).item(), abs=1e-6)
    # and the mean is over counted positions only: by explicit loop
    per = [divergence(s[b, i], t[b, i]).item() for b in range(3) for i in range(6) if mask[b, i]]
    assert kd_loss(s, t, mask, temperature=1.0).item() == pytest.approx(sum(per) / len(per), abs=1e-6)


def test_causal_lm_compares_next_token_predictions() -> None:
    # Position t predicts token t+1: the prediction before an ignored label (and the last one) drops out.
    s, t, labels = _random(6)
    obj = DistillationObjective("causal-lm", alpha=1.0, temperature=1.0)
    s_al, t_al, mask = obj._align(s, t, {"labels": labels, "attention_mask": torch.ones_like(labels)})
    assert s_al.shape == (3, 5, 13) and torch.equal(mask, labels[:, 1:] != IGNORE_INDEX)
    expected = kd_loss(s[:, :-1], t[:, :-1], labels[:, 1:] != IGNORE_INDEX, temperature=1.0)
    assert kd_loss(s_al, t_al, mask, temperature=1.0).item() == pytest.approx(expected.item())


def test_hidden_cosine_by_hand() -> None:
    # cos([1, 0], [1, 1]) = 1/sqrt(2), so 1 - cos = 0.2928932; the padded position (cos -1) is ignored.
    hs = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # (1, 2, 2)
    ht = torch.tensor([[[1.0, 1.0], [-1.0, 0.0]]])
    assert hidden_cosine_loss(hs, ht, torch.tensor([[1, 0]])).item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
    ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
    ({"divergence": "kl"}, "divergence must be one of"),
    ({"divergence": "jsd", "beta": 1.0}, "beta must be in"),
    ({"hidden_weight": -1.0}, "hidden_weight must be >= 0"),
])
def test_bad_settings_are_one_line_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(HfxError, match=match) as err:
        DistillationObjective("causal-lm", **kwargs)
    assert "\n" not in str(err.value)


def test_embedding_task_rejects_a_hard_label_mix() -> None:
    with pytest.raises(HfxError, match="alpha=1.0"):
        DistillationObjective("embedding", alpha=0.5)


def test_alpha_below_one_needs_labels() -> None:
    obj = DistillationObjective("sequence-classification", alpha=0.5)
    with pytest.raises(HfxError, match="no `labels`"):
        obj(_Fixed([[0.0, 0.0]]), {"input_ids": torch.zeros(1, 1, dtype=torch.long)}, _Fixed([[1.0, 0.0]]))
