"""``embed``: sentence embeddings - pooling heads, siamese/triplet/MNRL training, similarity, clustering, FAISS.

    emb = hfx.embed("minilm")                      # pooling and normalisation from the folder: as sentence-transformers
    vecs = emb.encode(["a sentence", "another"])   # (2, 384) float32; the same vectors whatever the batch size
    hfx.save(emb, "out/st")                        # SentenceTransformer("out/st") loads it

``hfx run plugin=embed`` fine-tunes minilm on the bundled ``pydoc_pairs`` triplets (see README.md).
"""

from pathlib import Path

from hfx.registry import Plugin
from hfx_plugins.embed.apply import apply, embed
from hfx_plugins.embed.checks import checks
from hfx_plugins.embed.config import EmbedConfig
from hfx_plugins.embed.embedder import Embedder
from hfx_plugins.embed.io import can_load, load, save
from hfx_plugins.embed.recipe import EmbedRecipe

__all__ = ["EmbedConfig", "EmbedRecipe", "Embedder", "embed", "plugin"]

plugin = Plugin(
    name="embed",
    description="Sentence embeddings: pooling heads, triplet/siamese/MNRL training, similarity, clustering, FAISS retrieval",
    config_cls=EmbedConfig,
    apply=apply,
    recipe=EmbedRecipe,
    checks=checks,
    save=save,
    load=load,
    can_load=can_load,
    presets_dir=Path(__file__).parent / "configs",
)
