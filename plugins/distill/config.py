"""Config of the ``distill`` plugin.

:class:`DistillConfig` is the distillation method itself: which teacher layers the student keeps, and the
loss (names as in trl's ``GKDConfig`` / DistilBERT: ``alpha``, ``temperature``, ``beta``). It is what
:func:`hfx.make_student` records on a student (and ``hfx.save`` writes beside it); distill has no drop-in
``hfx.apply``, since a student is a new model, not a change to the teacher. :class:`DistillRunConfig` adds what
only ``hfx run`` uses (the ``distill:`` section: a separate student model, the teacher cache, the no-teacher
baseline and the evaluation). No torch import: the checks the loss needs live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hfx.errors import HfxError

__all__ = ["DIVERGENCES", "POOLING_MODES", "DistillConfig", "DistillRunConfig", "check_params"]

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
"""The distillation divergences (see :mod:`hfx_plugins.distill.losses`)."""
POOLING_MODES = ("mean", "cls")
"""How the embedding task makes a sentence embedding from token states."""


def check_params(alpha: float, temperature: float, divergence: str, beta: float, hidden_weight: float,
                 prefix: str = "") -> None:
    """Check the loss settings (``prefix`` names the config section in the message, e.g. ``"distill."``).

    Raises:
        HfxError: ``alpha`` outside [0, 1], ``temperature`` <= 0, an unknown ``divergence``, ``beta`` outside
            (0, 1) for jsd, or a negative ``hidden_weight``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise HfxError(f"{prefix}alpha must be in [0, 1] (1 = distillation only, 0 = hard labels only), got {alpha}")
    if not temperature > 0:
        raise HfxError(f"{prefix}temperature must be > 0 (1 = unchanged softmax; 2-4 is usual), got {temperature}")
    if divergence not in DIVERGENCES:
        raise HfxError(f"{prefix}divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if divergence == "jsd" and not 0.0 < beta < 1.0:
        raise HfxError(f"{prefix}beta must be in (0, 1) for jsd (use forward_kl for 0, reverse_kl for 1), got {beta}")
    if hidden_weight < 0:
        raise HfxError(f"{prefix}hidden_weight must be >= 0, got {hidden_weight}")


@dataclass
class DistillConfig:
    """Knowledge distillation (Hinton et al. 2015) into a shallower student (DistilBERT, Sanh et al. 2019)."""

    layers: list[int] = field(default_factory=list)
    """Teacher layers the student keeps, in order; empty = every other layer (0, 2, 4, ...: DistilBERT's init)."""
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

    def __post_init__(self) -> None:
        check_params(self.alpha, self.temperature, self.divergence, self.beta, self.hidden_weight, prefix="distill.")
        if self.pooling not in POOLING_MODES:
            raise HfxError(f"distill.pooling must be mean or cls, got {self.pooling!r}")


@dataclass
class DistillRunConfig(DistillConfig):
    """The ``distill:`` section of ``hfx run``: :class:`DistillConfig` plus what only the recipe uses."""

    student: str = ""
    """A separate student model (offline name, folder or Hub id) instead of a cut-down teacher; it must use the teacher's tokenizer."""
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
    sentiment_sentences: int = 0
    """Embedding task without data.path: add up to this many training sentences of the bundled sentiment set (never its test sentences), so the student learns the teacher on the probe's kind of text (0 = none, 1,200 exist)."""
    speed_repeats: int = 3
    """Timing passes over the evaluation texts per model; the fastest counts (the CPU may be shared)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_sentences < 10:
            raise HfxError(f"distill.eval_sentences must be at least 10, got {self.eval_sentences}")
        if self.docstring_sentences < 0:
            raise HfxError(f"distill.docstring_sentences must be >= 0 (0 = none), got {self.docstring_sentences}")
        if self.sentiment_sentences < 0:
            raise HfxError(f"distill.sentiment_sentences must be >= 0 (0 = none), got {self.sentiment_sentences}")
        if self.speed_repeats < 1:
            raise HfxError(f"distill.speed_repeats must be at least 1, got {self.speed_repeats}")
        if self.baseline_learning_rate < 0:
            raise HfxError(f"distill.baseline_learning_rate must be >= 0 (0 = train.learning_rate), got {self.baseline_learning_rate}")
        if self.layers and self.student:
            raise HfxError("give distill.layers (cut the teacher) or distill.student (a separate model), not both")
