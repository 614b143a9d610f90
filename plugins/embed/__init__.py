"""``embed``: sentence embeddings - pooling heads, siamese/triplet/MNRL training, similarity, clustering, FAISS.

    emb = hfx.embed("minilm")                      # pooling and normalisation from the folder: as sentence-transformers
    vecs = emb.encode(["a sentence", "another"])   # (2, 384) float32; the same vectors whatever the batch size
    hfx.save(emb, "out/st")                        # SentenceTransformer("out/st") loads it

``hfx run plugin=embed`` fine-tunes minilm on the bundled ``pydoc_pairs`` triplets (see README.md). Lives in
``plugins/embed/`` (installed as ``hfx_plugins.embed``). Importing this package imports no torch: the public
names below are loaded from their modules on first use.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.embed.config import EmbedConfig, EmbedRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".apply": ("embed",),
    ".cached": ("CachedMNRL",),
    ".embedder": ("Embedder",),
    ".index": ("VectorIndex", "recall_at_k"),
    ".losses": ("cosine_similarity_loss", "mnrl_loss", "triplet_loss"),
    ".pooling": ("Pooling",),
    ".recipe": ("EmbedRecipe",),
    ".uses": ("EmbeddingClassifier", "cluster", "similarity_matrix"),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["EmbedConfig", "EmbedRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="embed", package=__name__, config_cls=EmbedConfig, run_config_cls=EmbedRunConfig,
                recipe="EmbedRecipe",
                description="Sentence embeddings: pooling heads, triplet/siamese/MNRL training, similarity, "
                            "clustering, FAISS retrieval")
