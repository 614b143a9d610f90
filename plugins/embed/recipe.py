"""``hfx run plugin=embed``: fine-tune a sentence embedder and show what it is good for.

One linear script. Default: ``minilm`` on the bundled ``pydoc_pairs`` triplets with a cosine triplet loss
(sentence-transformers' ``TripletLoss`` with its cosine distance). Before and after training it reports
similarity quality (Spearman of cosine similarities against the held-out pair scores), triplet accuracy, retrieval recall@k with a FAISS index, clustering
(k-means and agglomerative, adjusted Rand index against the topics) and a classification head on the
embeddings (topic accuracy); after training it prints a short retrieval demo and saves a
sentence-transformers folder (``artifacts/model``) and the FAISS index of the held-out corpus.

Data: rows with ``anchor, positive, negative`` (optional ``related`` and ``topic``), or scored pairs
``text, text_pair, label`` (the ``data.*_column`` options map other names); :func:`hfx.metrics.scored_pairs`
turns either into the (text, text, score) pairs of the Spearman score. Training inputs are cut at
``data.max_length`` tokens; ``embed.max_length`` is the limit of ``encode``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_text
from hfx.metrics import paired_cosine, proportion, scored_pairs, spearman
from hfx.registry import Recipe
from hfx.runner.loop import TrainLoop
from hfx_plugins.embed.cached import CachedMNRL
from hfx_plugins.embed.index import VectorIndex, drop_query_texts, recall_at_k
from hfx_plugins.embed.io import save as save_embedder
from hfx_plugins.embed.losses import cosine_similarity_loss, mnrl_loss, triplet_loss
from hfx_plugins.embed.uses import EmbeddingClassifier, cluster

__all__ = ["EmbedRecipe"]

TRIPLET = ("anchor", "positive", "negative")
PAIR = ("text", "text_pair", "label")


class EmbedRecipe(Recipe):
    """setup -> evaluate -> train -> evaluate -> save."""

    def setup(self) -> None:
        """Load the data (triplets or scored pairs) and the model, apply the plugins, build the loss.

        Raises:
            HfxError: no ``data.path``, columns of neither layout, or a loss other than cosine on scored pairs.
        """
        ctx, run = self.ctx, self.ctx.run
        self.cfg = ctx.config("embed")
        if not run.data.path:
            raise HfxError("no data given; set data.path=pydoc_pairs (bundled) or a file with anchor/positive/negative columns")
        self.data = ctx.load_data()
        cols = self.data["train"].column_names
        self.triplets = all(c in cols for c in TRIPLET)
        if not self.triplets and not all(c in cols for c in PAIR):
            raise HfxError(f"embed needs columns {', '.join(TRIPLET)} or {', '.join(PAIR)}; the data has {', '.join(cols)}")
        if not self.triplets and self.cfg.loss != "cosine":
            raise HfxError(f"embed.loss={self.cfg.loss} needs anchor/positive/negative columns; use embed.loss=cosine for scored pairs")
        model, tokenizer = ctx.load_model("base")
        self.embedder = ctx.apply_plugins(model)
        if self.embedder.tokenizer is None:
            self.embedder.tokenizer = tokenizer
        train = self.data["train"]
        if self.cfg.loss == "cosine":  # siamese regression on scored pairs
            self.columns = ["text", "text_pair"]
            self.examples = [{"text": a, "text_pair": b, "score": s} for a, b, s in scored_pairs(train)]
        else:
            self.columns = list(TRIPLET)
            self.examples = [{c: r[c] for c in TRIPLET} for r in train]
        self.cached = CachedMNRL(self.embedder, self.cfg.scale, self.cfg.mini_batch_size) if self.cfg.loss == "cached_mnrl" else None
        self.trained = False
        self.loop = TrainLoop(ctx, self.embedder, self.examples, self._collate, loss_fn=self._loss, evaluate=self.evaluate)
        ctx.print(f"embed: {self.cfg.loss} loss, pooling={self.embedder.pooling.mode}, normalize="
                  f"{self.embedder.pooling.normalize} on {run.model}; {len(self.examples)} training examples")

    def _collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        limit = min(self.ctx.run.data.max_length, self.embedder.limit())
        tok = self.embedder.tokenizer
        columns = [dict(tok([r[c] for r in rows], padding=True, truncation=True, max_length=limit, return_tensors="pt"))
                   for c in self.columns]
        columns = [{k: f[k] for k in ("input_ids", "attention_mask")} for f in columns]  # each (B, T_c)
        batch: dict[str, Any] = {"columns": columns}
        if self.cfg.loss == "cosine":
            batch["scores"] = torch.tensor([r["score"] for r in rows], dtype=torch.float32)  # (B,)
        return batch

    def _loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        cfg = self.cfg
        if self.cached is not None:
            self.cached.embed = model  # the prepared model (accelerate may wrap it)
            return self.cached(batch["columns"])
        embs = [model(**f) for f in batch["columns"]]  # each (B, H)
        if cfg.loss == "cosine":
            return cosine_similarity_loss(embs[0], embs[1], batch["scores"])
        if cfg.loss == "triplet":
            return triplet_loss(*embs, margin=cfg.margin, distance=cfg.distance)
        return mnrl_loss(embs[0], embs[1], embs[2:], cfg.scale)

    def _encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(texts))
        vecs = self.ctx.accelerator.unwrap_model(self.embedder).encode(unique, self.cfg.encode_batch_size)
        return dict(zip(unique, vecs, strict=True))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out pairs' cosine-vs-score Spearman, plus retrieval (triplets) and topic metrics."""
        ev = self.data["eval"]
        pairs = scored_pairs(ev)
        vec = self._encode([t for a, b, _ in pairs for t in (a, b)] + (list(ev["anchor"]) if self.triplets else []))
        cos = paired_cosine(np.stack([vec[a] for a, _, _ in pairs]), np.stack([vec[b] for _, b, _ in pairs]))  # (P,)
        metrics = {"spearman": spearman(cos, np.array([s for _, _, s in pairs]))}
        if self.triplets:
            metrics.update(self._retrieval(ev, vec))
        if "topic" in ev.column_names:
            metrics.update(self._topics(ev, vec))
        return metrics

    def _retrieval(self, ev: datasets.Dataset, vec: dict[str, np.ndarray]) -> dict[str, float]:
        anchors, positives = list(ev["anchor"]), list(ev["positive"])
        a = np.stack([vec[t] for t in anchors])  # (Q, H)
        cos_p = paired_cosine(a, np.stack([vec[t] for t in positives]))  # (Q,)
        cos_n = paired_cosine(a, np.stack([vec[t] for t in ev["negative"]]))  # (Q,)
        corpus = list(dict.fromkeys(positives))  # query i's relevant document: its own positive
        self.index = VectorIndex.build(np.stack([vec[t] for t in corpus]), metric="cosine")
        self.corpus = corpus
        k_max = max(self.cfg.recall_k)
        _, found = self.index.search(a, k_max + 1)  # (Q, k + 1): one spare for the query's own text
        # Rows are consecutive sentences, so a query can also be another row's positive: not an answer to itself.
        ids = drop_query_texts(found, corpus, anchors, k_max)  # (Q, k)
        relevant = [corpus.index(p) for p in positives]
        out = {"triplet_accuracy": proportion(float((cos_p > cos_n).mean()), len(anchors))}  # with its n and 95% CI
        # one relevant document per query: recall@k is the share of queries that find it
        out.update({f"recall@{k}": proportion(recall_at_k(ids, relevant, k), len(relevant))
                    for k in sorted(set(self.cfg.recall_k))})
        if self.trained:
            self._demo(anchors, ids, relevant)
        return out

    def _topics(self, ev: datasets.Dataset, vec: dict[str, np.ndarray]) -> dict[str, float]:
        from sklearn.metrics import adjusted_rand_score

        texts, topics = list(ev["anchor"]), list(ev["topic"])
        names = sorted(set(topics))
        y = np.array([names.index(t) for t in topics])
        x = np.stack([vec[t] for t in texts])  # (N, H)
        out = {f"{m}_ari": float(adjusted_rand_score(y, cluster(x, len(names), m, seed=self.ctx.run.seed)))
               for m in ("kmeans", "agglomerative")}
        # classification head: fit on even rows, score on odd rows (topics are interleaved: rows are shuffled)
        head = EmbeddingClassifier(seed=self.ctx.run.seed).fit(x[0::2], y[0::2])
        out["topic_accuracy"] = proportion(float((head.predict(x[1::2]) == y[1::2]).mean()), len(y[1::2]))
        return out

    def _demo(self, queries: list[str], ids: np.ndarray, relevant: list[int]) -> None:
        for q in range(min(self.cfg.demo_queries, len(queries))):
            self.ctx.print(f"query: {queries[q][:100]}")
            for rank, i in enumerate([i for i in ids[q][:3] if i >= 0], start=1):
                mark = "*" if i == relevant[q] else " "
                self.ctx.print(f"  {rank}.{mark} {self.corpus[i][:100]}")
        self.ctx.print("(* = the query's own next sentence)")

    def train(self) -> dict[str, float]:
        """Train with the runner's loop; returns its metrics."""
        out = self.loop.run()
        self.trained = True
        return out

    def save(self, out_dir: Path) -> list[Path]:
        """Write ``model/`` (a sentence-transformers folder) and any index built, with its texts."""
        embedder = self.ctx.accelerator.unwrap_model(self.loop.model)
        path = out_dir / "model"
        with atomic_dir(path) as tmp:  # a sentence-transformers folder: SentenceTransformer(path) loads it
            save_embedder(embedder, tmp)
        written = [path]
        if getattr(self, "index", None) is not None:
            written.append(self.index.save(out_dir / "index"))
            atomic_write_text(out_dir / "index_texts.txt", "".join(t.replace("\n", " ") + "\n" for t in self.corpus))
            written.append(out_dir / "index_texts.txt")
        return written
