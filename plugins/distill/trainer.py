"""``DistillationTrainer``: ``transformers.Trainer`` that trains a student on a teacher's outputs.

    from hfx import DistillationTrainer, make_student

    student = make_student(teacher)                      # every other layer, DistilBERT's initialisation
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=TrainingArguments(...),
                                  train_dataset=ds, data_collator=collate, alpha=0.5, temperature=2.0)
    trainer.train()

Everything else is the Trainer's (optimizer, schedule, logging, checkpoints, accelerate, DDP). The loss is
:class:`~hfx_plugins.distill.objective.DistillationObjective`; the teacher is frozen, kept in eval mode and
run under ``torch.no_grad``. With ``teacher_cache=path`` (written by
:func:`~hfx_plugins.distill.cache.cache_teacher_outputs`) no teacher is needed at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from transformers import DataCollatorWithPadding, Trainer, default_data_collator

from hfx.errors import HfxError
from hfx_plugins.distill.cache import CachedTeacherDataset, TeacherCache, TeacherCacheCollator
from hfx_plugins.distill.objective import CACHE_KEY, DistillationObjective, infer_task
from hfx_plugins.distill.student import warn_if_larger

__all__ = ["DistillationTrainer", "check_pair"]


def _vocab_size(model: nn.Module) -> int | None:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return int(emb.num_embeddings) if emb is not None else None


def check_pair(student: nn.Module, teacher: nn.Module, task: str,
               student_tokenizer: Any = None, teacher_tokenizer: Any = None) -> None:
    """Fail before training when teacher and student cannot be compared; warn when the student is larger.

    Both models read the same ``input_ids`` and their outputs are compared entry by entry, so they need
    one tokenizer (same vocabulary) and, for logits, the same output size.

    Raises:
        HfxError: different tokenizers or vocabulary sizes, different ``num_labels`` (classification), or
            different hidden sizes (embedding MSE).
    """
    if student_tokenizer is not None and teacher_tokenizer is not None:
        if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
            raise HfxError("the student's and the teacher's tokenizers differ; distillation feeds both the same "
                           "token ids: give the student the teacher's tokenizer (make_student(teacher) does)")
    sv, tv = _vocab_size(student), _vocab_size(teacher)
    if sv != tv:
        raise HfxError(f"the student has a vocabulary of {sv} tokens, the teacher {tv}; teacher and student must "
                       "share the tokenizer (build the student with make_student(teacher) or from the teacher's config)")
    if task == "sequence-classification" and student.config.num_labels != teacher.config.num_labels:
        raise HfxError(f"the student has {student.config.num_labels} labels, the teacher {teacher.config.num_labels}; "
                       "give the student the teacher's num_labels")
    if task == "embedding" and student.config.hidden_size != teacher.config.hidden_size:
        raise HfxError(f"student embeddings have {student.config.hidden_size} dimensions, the teacher's "
                       f"{teacher.config.hidden_size}; the MSE needs equal widths (use make_student(teacher, layers=...))")
    warn_if_larger(student, teacher)


class DistillationTrainer(Trainer):
    """A Trainer whose loss is alpha * T^2 * D(teacher, student) + (1 - alpha) * CE [+ hidden cosine].

    Args:
        model: The student (any transformers model with a head, or a bare encoder for embeddings).
        teacher_model: The teacher; frozen here. May be None when ``teacher_cache`` is given.
        args: ``TrainingArguments``; other Trainer keyword arguments pass through unchanged.
        alpha: Weight of the distillation term in [0, 1]; default 0.5, and 1.0 for the embedding task.
        temperature: Softmax temperature T > 0.
        divergence: "forward_kl" (Hinton), "reverse_kl" or "jsd" (generalized JSD of GKD, with ``beta``).
        beta: Mixture weight of the generalized JSD, in (0, 1).
        hidden_weight: Weight of DistilBERT's cosine loss between last hidden states (0 = off).
        task: sequence-classification, masked-lm, causal-lm, seq2seq-lm or embedding; default from the model.
        teacher_cache: A file written by ``cache_teacher_outputs``: offline distillation, no teacher needed.
        teacher_processing_class: The teacher's tokenizer, checked against ``processing_class``.
        pooling, normalize: Embedding task: how sentence embeddings are made from the last hidden states.

    Raises:
        HfxError: no student, neither a teacher nor a cache, a setting out of range (see
            :func:`~hfx_plugins.distill.config.check_params`), a teacher/student pair that cannot be compared
            (:func:`check_pair`), or a cache that does not fit the student.
    """

    def __init__(self, model: nn.Module | None = None, teacher_model: nn.Module | None = None, args: Any = None, *,
                 alpha: float | None = None, temperature: float = 2.0, divergence: str = "forward_kl",
                 beta: float = 0.5, hidden_weight: float = 0.0, task: str | None = None,
                 teacher_cache: str | Path | None = None, teacher_processing_class: Any = None,
                 pooling: str = "mean", normalize: bool = True, **kwargs: Any) -> None:
        if model is None:
            raise HfxError("DistillationTrainer needs the student as model=...")
        if teacher_model is None and teacher_cache is None:
            raise HfxError("DistillationTrainer needs teacher_model=... or teacher_cache=<file from cache_teacher_outputs>")
        task = task or infer_task(model)
        if alpha is None:
            alpha = 1.0 if task == "embedding" else 0.5
        self.objective = DistillationObjective(task, alpha, temperature, divergence, beta, hidden_weight,
                                               pooling, normalize)  # checks every value (HfxError)
        if teacher_model is not None:
            check_pair(model, teacher_model, task, kwargs.get("processing_class"), teacher_processing_class)
            teacher_model.requires_grad_(False)
            teacher_model.eval()
        cache = TeacherCache(teacher_cache) if teacher_cache is not None else None
        if cache is not None:
            cache.check_student(model, task)
            base = kwargs.get("data_collator")
            if base is None:
                tok = kwargs.get("processing_class")
                base = DataCollatorWithPadding(tok) if tok is not None else default_data_collator
            kwargs["data_collator"] = TeacherCacheCollator(base, task)
        self.teacher = teacher_model
        super().__init__(model=model, args=args, **kwargs)
        if cache is not None and self.train_dataset is not None:
            ds = self.train_dataset
            if isinstance(ds, datasets.Dataset) and self.args.remove_unused_columns:
                ds = self._remove_unused_columns(ds, "training")  # what the Trainer would do, before wrapping
            self.train_dataset = CachedTeacherDataset(ds, cache)
        # The objective returns a mean over its own positions, not a sum to be divided by num_items_in_batch:
        # tell the Trainer so it divides by the gradient-accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        if self.teacher is not None:
            self.teacher.to(self.args.device)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if CACHE_KEY not in self._signature_columns:  # keep cached teacher outputs through column removal
            self._signature_columns.append(CACHE_KEY)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        """The distillation objective's scalar loss on ``inputs`` (its terms are kept for the next log).

        ``num_items_in_batch`` is unused: the objective already averages over its own positions.
        """
        loss, terms, outputs = self.objective(model, inputs, self.teacher)
        if self.model.training and self.state.global_step % max(self.args.logging_steps, 1) == 0:
            self._distill_terms = {k: float(v.detach()) for k, v in terms.items()}
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the last logged step's distillation terms (kd, ce, cos) to the Trainer's training logs."""
        if "loss" in logs and getattr(self, "_distill_terms", None):
            logs = {**logs, **{f"distill_{k}": round(v, 6) for k, v in self._distill_terms.items()}}
        super().log(logs, *args, **kwargs)
