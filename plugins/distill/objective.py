"""The distillation objective for every task: align student and teacher outputs, mask, combine the terms.

One :class:`DistillationObjective` serves both :class:`~hfx_plugins.distill.trainer.DistillationTrainer`
(``transformers.Trainer``) and ``hfx run plugin=distill`` (hfx's own loop). What is compared, per task:

==========================  ===========================  ======================================================
task                        outputs compared             positions that count
==========================  ===========================  ======================================================
sequence-classification     logits (B, C)                every example
masked-lm                   logits (B, T, V)             the masked tokens (labels != IGNORE_INDEX), as
                                                         DistilBERT; every real token when the batch has no
                                                         labels
causal-lm                   logits[:, :-1] (B, T-1, V)   the predicted next tokens (labels[:, 1:] !=
                                                         IGNORE_INDEX), else attention_mask[:, 1:]
seq2seq-lm                  decoder logits (B, T, V)     target tokens (labels != IGNORE_INDEX)
embedding                   pooled hidden states (B, D)  every example (MSE, no temperature)
==========================  ===========================  ======================================================

A batch may carry the teacher's outputs already (``teacher_logits``, from the offline cache in
:mod:`.cache`); then no teacher forward pass is run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hfx.data.collate import IGNORE_INDEX
from hfx.errors import HfxError
from hfx.pooling import cls_pool, mean_pool
from hfx_plugins.distill.config import POOLING_MODES, check_params
from hfx_plugins.distill.losses import embedding_mse, hidden_cosine_loss, kd_loss

__all__ = ["CACHE_KEY", "TASKS", "DistillationObjective", "infer_task", "output_positions", "pool"]

TASKS = ("sequence-classification", "masked-lm", "causal-lm", "seq2seq-lm", "embedding")
CACHE_KEY = "teacher_logits"
"""Batch key of cached teacher outputs (logits, or embeddings for the embedding task)."""


def infer_task(model: nn.Module) -> str:
    """The distillation task of a transformers model, from its class (its head).

    Raises:
        HfxError: the class name says no task and the model has a head (pass ``task=``).
    """
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "seq2seq-lm"
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal-lm"
    if name.endswith("ForMaskedLM"):
        return "masked-lm"
    if name.endswith("ForSequenceClassification"):
        return "sequence-classification"
    has_head = any(isinstance(getattr(model, n, None), nn.Module) for n in ("classifier", "score", "lm_head"))
    if not has_head and getattr(model, "get_output_embeddings", lambda: None)() is None:
        return "embedding"
    raise HfxError(f"cannot tell the distillation task of {name}; pass task= one of {', '.join(TASKS)}")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Sentence embedding from token states: masked mean (sentence-transformers' default) or [CLS]. (B, T, H) -> (B, H)

    The arithmetic is :mod:`hfx.pooling`'s (sentence-transformers' ``Pooling``).
    """
    return cls_pool(hidden, attention_mask) if mode == "cls" else mean_pool(hidden, attention_mask)  # (B, H)


def output_positions(batch: dict[str, torch.Tensor], task: str) -> torch.Tensor | None:
    """Positions whose outputs exist for ``task``: (B, T) bool for token tasks, None for sequence-level ones.

    Raises:
        HfxError: a seq2seq batch without ``labels``.
    """
    if task in ("sequence-classification", "embedding"):
        return None
    if task == "seq2seq-lm":
        if "labels" not in batch:
            raise HfxError("seq2seq distillation needs `labels` (the target ids) in every batch")
        return batch["labels"] != IGNORE_INDEX  # (B, T_dec)
    return batch["attention_mask"].bool()  # (B, T)


@dataclass
class DistillationObjective:
    """alpha * T^2 * D(teacher, student) + (1 - alpha) * CE + hidden_weight * cosine, for one task.

    Raises:
        HfxError: an unknown task or pooling, a setting out of range (:func:`~hfx_plugins.distill.config.check_params`),
            or alpha != 1 / hidden_weight != 0 for the embedding task.
    """

    task: str
    """One of TASKS."""
    alpha: float = 0.5
    """Weight of the distillation term; 1 - alpha weighs the hard-label cross-entropy."""
    temperature: float = 2.0
    """Softmax temperature T of both distributions."""
    divergence: str = "forward_kl"
    """forward_kl, reverse_kl or jsd (see hfx_plugins.distill.losses)."""
    beta: float = 0.5
    """Mixture weight of the generalized JSD (divergence=jsd)."""
    hidden_weight: float = 0.0
    """Weight of the cosine loss between the last hidden states (DistilBERT's third term)."""
    pooling: str = "mean"
    """Embedding task: mean or cls pooling of the last hidden states."""
    normalize: bool = True
    """Embedding task: L2-normalise both embeddings before the MSE (all-MiniLM-L6-v2 ends with Normalize)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise HfxError(f"unknown distillation task {self.task!r}; choose one of {', '.join(TASKS)}")
        check_params(self.alpha, self.temperature, self.divergence, self.beta, self.hidden_weight)
        if self.task == "embedding" and (self.alpha != 1.0 or self.hidden_weight != 0.0):
            raise HfxError("embedding regression has no hard labels and compares pooled states already; "
                           "use alpha=1.0 and hidden_weight=0")
        if self.pooling not in POOLING_MODES:
            raise HfxError(f"pooling must be mean or cls, got {self.pooling!r}")

    def embed(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sentence embeddings of a bare encoder. -> (B, H)"""
        out = model(**_inputs(batch, labels=False))
        emb = pool(out.last_hidden_state, batch["attention_mask"], self.pooling)  # (B, H)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    @torch.no_grad()
    def teacher_outputs(self, teacher: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """The teacher's logits (or embeddings) and its raw output, without gradients, in eval mode.

        Logits are (B, C) for classification, (B, T, V) for language modelling; embeddings are (B, H), with
        None for the raw output.
        """
        teacher.eval()  # every call: a Trainer or loop may have switched modes; dropout must stay off
        if self.task == "embedding":
            return self.embed(teacher, batch), None
        # seq2seq without decoder_input_ids: the model derives them from labels, so labels go in.
        keep_labels = self.task == "seq2seq-lm" and "decoder_input_ids" not in batch
        out = teacher(**_inputs(batch, labels=keep_labels), output_hidden_states=self.hidden_weight > 0)
        return out.logits, out

    def __call__(self, student: nn.Module, batch: dict[str, torch.Tensor],
                 teacher: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        """Return ``(loss, {term: value}, student output)`` for one batch.

        Raises:
            HfxError: no teacher and no cached outputs, hidden states asked of a cache, alpha < 1 without
                ``labels``, or student and teacher outputs of different shapes.
        """
        batch = dict(batch)
        cached = batch.pop(CACHE_KEY, None)
        if cached is None and teacher is None:
            raise HfxError(f"no teacher: pass teacher_model=..., or batches carrying cached `{CACHE_KEY}`")
        if cached is not None and self.hidden_weight > 0:
            raise HfxError("cached teacher outputs hold no hidden states; set hidden_weight=0 or pass the teacher model")
        t_logits, t_out = (cached, None) if cached is not None else self.teacher_outputs(teacher, batch)  # type: ignore[arg-type]
        t_logits = t_logits.detach()  # a constant target, even if a teacher hands back a leaf tensor
        terms: dict[str, torch.Tensor] = {}
        if self.task == "embedding":
            s_out = None
            s_emb = self.embed(student, batch)  # (B, H)
            terms["kd"] = embedding_mse(s_emb, t_logits)
            loss = terms["kd"]
        else:
            need_ce = self.alpha < 1.0
            if need_ce and "labels" not in batch:
                raise HfxError("alpha < 1 mixes in the hard-label loss but the batch has no `labels`; set alpha=1.0")
            with_labels = need_ce or (self.task == "seq2seq-lm" and "decoder_input_ids" not in batch)
            s_out = student(**_inputs(batch, labels=with_labels), output_hidden_states=self.hidden_weight > 0)
            s, t, mask = self._align(s_out.logits, t_logits.to(s_out.logits.device), batch)
            terms["kd"] = kd_loss(s, t, mask, self.divergence, self.beta, self.temperature)
            loss = self.alpha * terms["kd"]
            if need_ce:
                terms["ce"] = s_out.loss  # the model's own hard-label loss (padding ignored via IGNORE_INDEX)
                loss = loss + (1.0 - self.alpha) * terms["ce"]
        if self.hidden_weight > 0:
            terms["cos"] = self._hidden_term(s_out, t_out, batch)
            loss = loss + self.hidden_weight * terms["cos"]
        return loss, terms, s_out

    def _align(self, s: torch.Tensor, t: torch.Tensor, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Student and teacher logits over the same positions, and which of them count."""
        if s.shape != t.shape:
            raise HfxError(f"student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ; "
                           "teacher and student must share the tokenizer and the label set")
        labels = batch.get("labels")
        if self.task == "sequence-classification":
            return s, t, None  # (B, C): every example counts
        if self.task == "causal-lm":
            # Position t predicts token t+1: keep T-1 predictions whose target is a real, non-ignored token.
            mask = labels[:, 1:] != IGNORE_INDEX if labels is not None else batch["attention_mask"][:, 1:].bool()
            return s[:, :-1], t[:, :-1], mask  # (B, T-1, V), (B, T-1, V), (B, T-1)
        if self.task == "masked-lm":
            mask = labels != IGNORE_INDEX if labels is not None else batch["attention_mask"].bool()
            return s, t, mask  # (B, T, V), (B, T, V), (B, T)
        return s, t, labels != IGNORE_INDEX  # seq2seq: decoder positions (B, T_dec)

    def _hidden_term(self, s_out: Any, t_out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cosine loss between the last hidden states (decoder's for seq2seq) at the real token positions."""
        key = "decoder_hidden_states" if self.task == "seq2seq-lm" else "hidden_states"
        s_h, t_h = getattr(s_out, key)[-1], getattr(t_out, key)[-1]  # (B, T, H) each
        if s_h.shape[-1] != t_h.shape[-1]:
            raise HfxError(f"hidden_weight > 0 needs equal widths, got student {s_h.shape[-1]} vs teacher "
                           f"{t_h.shape[-1]}; set hidden_weight=0 or build the student with make_student")
        mask = output_positions(batch, "seq2seq-lm") if self.task == "seq2seq-lm" else batch["attention_mask"]
        return hidden_cosine_loss(s_h, t_h, mask)


def _inputs(batch: dict[str, torch.Tensor], labels: bool) -> dict[str, torch.Tensor]:
    """The model inputs of a batch, with or without ``labels``."""
    return {k: v for k, v in batch.items() if labels or k != "labels"}
