"""Config of the ``embed`` plugin.

:class:`EmbedConfig` is what ``hfx.apply(model, "embed", ...)`` and ``hfx.embed`` take: how a transformer
becomes a sentence embedder (sentence-transformers' pooling modes, normalisation, input length).
:class:`EmbedRunConfig` adds what only ``hfx run`` uses (the ``embed:`` section: the training loss and its
settings, and what the evaluation reports). No torch import: the constants checked here live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hfx.errors import HfxError, did_you_mean

__all__ = ["DISTANCES", "LOSSES", "POOLING_MODES", "EmbedConfig", "EmbedRunConfig"]

POOLING_MODES: tuple[str, ...] = ("mean", "max", "cls", "lasttoken", "weightedmean")
"""The pooling modes hfx implements (sentence-transformers' ``Pooling`` names)."""
LOSSES = ("triplet", "cosine", "mnrl", "cached_mnrl")
DISTANCES = ("cosine", "euclidean")


def _choose(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HfxError(f"embed.{key}={value!r} is unknown{did_you_mean(value, choices)}; choose one of: {', '.join(choices)}")


@dataclass
class EmbedConfig:
    """Sentence embeddings: a pooling head on a transformer (Sentence-BERT, https://arxiv.org/abs/1908.10084)."""

    pooling: str = "auto"
    """mean, max, cls, lasttoken or weightedmean; auto = the model folder's sentence-transformers pooling (1_Pooling/config.json), else mean for encoders and lasttoken for decoders."""
    normalize: bool | None = None
    """L2-normalise each embedding; empty (null) = as the model folder's sentence-transformers modules say (a Normalize module), else false."""
    max_length: int = 0
    """Longest input in tokens (longer texts are truncated, with one notice); 0 = the folder's sentence-transformers max_seq_length, else the tokenizer's limit."""

    def __post_init__(self) -> None:
        if self.pooling != "auto":
            _choose("pooling", self.pooling, POOLING_MODES)
        if self.max_length < 0:
            raise HfxError(f"embed.max_length must be >= 0 (0 = the model's limit), got {self.max_length}")


@dataclass
class EmbedRunConfig(EmbedConfig):
    """The ``embed:`` section of ``hfx run``: :class:`EmbedConfig` plus the training loss and the evaluation."""

    loss: str = "triplet"
    """Training loss: triplet (anchor, positive, negative), cosine (siamese regression on pair scores), mnrl (multiple-negatives ranking, in-batch negatives) or cached_mnrl (the same with gradient caching)."""
    distance: str = "cosine"
    """Triplet distance: cosine (max(0, margin - cos(a, p) + cos(a, n))) or euclidean (sentence-transformers' TripletLoss default)."""
    margin: float = 0.3
    """Triplet margin: how much closer the positive must be than the negative (sentence-transformers uses 5 with euclidean)."""
    scale: float = 20.0
    """MNRL: cosine similarities are multiplied by this before the softmax (1 / temperature; 20 = temperature 0.05)."""
    mini_batch_size: int = 8
    """cached_mnrl: texts embedded per forward pass; the batch itself can be much larger (GradCache)."""
    encode_batch_size: int = 64
    """Texts per forward pass when encoding for evaluation and retrieval."""
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])
    """Report retrieval recall@k for these k."""
    demo_queries: int = 3
    """Held-out queries shown with their nearest neighbours after training."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _choose("loss", self.loss, LOSSES)
        _choose("distance", self.distance, DISTANCES)
        if self.margin < 0:
            raise HfxError(f"embed.margin must be >= 0, got {self.margin}")
        if self.scale <= 0:
            raise HfxError(f"embed.scale must be > 0 (it is 1 / temperature), got {self.scale}")
        for name in ("mini_batch_size", "encode_batch_size"):
            if getattr(self, name) < 1:
                raise HfxError(f"embed.{name} must be at least 1, got {getattr(self, name)}")
        if not self.recall_k or any(k < 1 for k in self.recall_k):
            raise HfxError(f"embed.recall_k must be a non-empty list of k >= 1, got {list(self.recall_k)}")
