"""Config of the ``distill`` plugin (the ``distill:`` section of ``hfx run``, and ``hfx.apply(model, "distill")``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hfx.errors import HfxError
from hfx_plugins.distill.objective import check_params

__all__ = ["DistillConfig"]


@dataclass
class DistillConfig:
    """Knowledge distillation of the run's model (the teacher) into a shallower student."""

    layers: list[int] = field(default_factory=list)
    """Teacher layers the student keeps, in order; empty = every other layer (0, 2, 4, ...: DistilBERT's init)."""
    student: str = ""
    """A separate student model (offline name, folder or Hub id) instead of a cut-down teacher; it must use the teacher's tokenizer."""
    alpha: float = 0.5
    """Weight of the distillation term in [0, 1]; 1 - alpha weighs the hard-label loss. Embedding regression needs 1.0."""
    temperature: float = 2.0
    """Softmax temperature T > 0 of teacher and student; the distillation term is scaled by T^2."""
    divergence: str = "forward_kl"
    """forward_kl (Hinton, DistilBERT), reverse_kl (mode-seeking) or jsd (generalized JSD of GKD, with beta)."""
    beta: float = 0.5
    """Mixture weight of the generalized JSD, in (0, 1) (divergence=jsd only)."""
    hidden_weight: float = 0.0
    """Weight of DistilBERT's cosine loss between student and teacher last hidden states (0 = off)."""
    pooling: str = "mean"
    """Embedding task: how token states become a sentence embedding (mean or cls)."""
    normalize: bool = True
    """Embedding task: L2-normalise embeddings before the MSE (all-MiniLM-L6-v2 ends with a Normalize layer)."""
    cache_teacher: bool = True
    """Compute the teacher's outputs once into teacher_cache.safetensors in the run folder and train from it (offline distillation); for causal LMs this stores T x vocabulary floats per text."""
    baseline: bool = True
    """Also train the same student without the teacher (hard labels; SimCSE for embeddings), so the gain shows."""
    baseline_learning_rate: float = 0.0
    """Learning rate of the no-teacher run; 0 = train.learning_rate (SimCSE wants a smaller one than the MSE)."""
    eval_sentences: int = 300
    """Embedding task without data.path: held-out sentences (the last ones of pydoc_data.topics) for the Spearman score."""
    docstring_sentences: int = 0
    """Embedding task without data.path: add up to this many sentences of the standard library's docstrings to the training sentences (hfx.data.docstrings; 0 = none, about 12,000 exist)."""
    speed_repeats: int = 3
    """Timing passes over the evaluation texts per model; the fastest counts (the CPU may be shared)."""

    def __post_init__(self) -> None:
        check_params(self.alpha, self.temperature, self.divergence, self.beta, self.hidden_weight, prefix="distill.")
        if self.pooling not in ("mean", "cls"):
            raise HfxError(f"distill.pooling must be mean or cls, got {self.pooling!r}")
        if self.eval_sentences < 10:
            raise HfxError(f"distill.eval_sentences must be at least 10, got {self.eval_sentences}")
        if self.docstring_sentences < 0:
            raise HfxError(f"distill.docstring_sentences must be >= 0 (0 = none), got {self.docstring_sentences}")
        if self.speed_repeats < 1:
            raise HfxError(f"distill.speed_repeats must be at least 1, got {self.speed_repeats}")
        if self.baseline_learning_rate < 0:
            raise HfxError(f"distill.baseline_learning_rate must be >= 0 (0 = train.learning_rate), got {self.baseline_learning_rate}")
        if self.layers and self.student:
            raise HfxError("give distill.layers (cut the teacher) or distill.student (a separate model), not both")
