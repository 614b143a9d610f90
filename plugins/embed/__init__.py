"""``embed``: sentence embeddings - pooling heads, siamese/triplet/MNRL training, similarity, clustering, FAISS.

    emb = hfx.embed("minilm")                      # pooling and normalisation from the folder: as sentence-transformers
    vecs = emb.encode(["a sentence", "another"])   # (2, 384) float32; the same vectors whatever the batch size
    hfx.save(emb, "out/st")                        # SentenceTransformer("out/st") loads it

``hfx run plugin=embed`` fine-tunes minilm on the bundled ``pydoc_pairs`` triplets (see README.md). Lives in
``plugins/embed/`` (installed as ``hfx_plugins.embed``). Importing this package imports no torch: the public
names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.embed.config import EmbedConfig, EmbedRunConfig

_EXPORTS = {
    "CachedMNRL": "hfx_plugins.embed.cached",
    "EmbedRecipe": "hfx_plugins.embed.recipe",
    "Embedder": "hfx_plugins.embed.embedder",
    "EmbeddingClassifier": "hfx_plugins.embed.uses",
    "Pooling": "hfx_plugins.embed.pooling",
    "VectorIndex": "hfx_plugins.embed.index",
    "cluster": "hfx_plugins.embed.uses",
    "cosine_similarity_loss": "hfx_plugins.embed.losses",
    "embed": "hfx_plugins.embed.apply",
    "mnrl_loss": "hfx_plugins.embed.losses",
    "recall_at_k": "hfx_plugins.embed.index",
    "similarity_matrix": "hfx_plugins.embed.uses",
    "triplet_loss": "hfx_plugins.embed.losses",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "CachedMNRL",
    "EmbedConfig",
    "EmbedRecipe",
    "EmbedRunConfig",
    "Embedder",
    "EmbeddingClassifier",
    "Pooling",
    "VectorIndex",
    "cluster",
    "cosine_similarity_loss",
    "embed",
    "mnrl_loss",
    "plugin",
    "recall_at_k",
    "similarity_matrix",
    "triplet_loss",
]

plugin = Plugin(
    name="embed",
    description="Sentence embeddings: pooling heads, triplet/siamese/MNRL training, similarity, clustering, FAISS retrieval",
    config_cls=EmbedConfig,
    run_config_cls=EmbedRunConfig,
    apply=lazy("hfx_plugins.embed.apply:apply"),
    recipe=lazy("hfx_plugins.embed.recipe:EmbedRecipe"),
    checks=lazy("hfx_plugins.embed.checks:checks"),
    save=lazy("hfx_plugins.embed.io:save"),
    load=lazy("hfx_plugins.embed.io:load"),
    can_load=lazy("hfx_plugins.embed.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
