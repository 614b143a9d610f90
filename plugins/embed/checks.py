"""``hfx validate plugin=embed``: hfx's pooling heads, encode, losses and saved folders against sentence-transformers.

Each check returns the largest absolute difference:

- pooling heads on a tiny BERT and a tiny Llama (every mode), and on ``minilm`` (mean, max, CLS): the same
  padded batch through hfx's :class:`Embedder` and through sentence-transformers' Transformer + Pooling;
- ``encode`` on ``minilm`` (mean, max, CLS, each L2-normalised as minilm ships): hfx's bucketed encode
  against ``SentenceTransformer.encode``, both at batch size 32 (sentence-transformers pads, hfx does not);
- losses: CosineSimilarityLoss, TripletLoss (cosine and euclidean) and MultipleNegativesRankingLoss on
  the same minilm embeddings of held-out ``pydoc_pairs`` triplets (values and gradients), and the cached
  MNRL's parameter gradients against ``CachedMultipleNegativesRankingLoss`` on a tiny BERT;
- ``hfx.save`` -> ``SentenceTransformer(path)``: the same embeddings.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import torch

from hfx.validate import Check

__all__ = ["checks"]

TOL = 1e-6
_TEXTS = [
    "The function returns a new list.",
    "A class may define its own methods and attributes, and inherit the rest from its base classes.",
    "Names are bound at run time.",
    "",
]


@functools.cache
def _st_minilm() -> Any:
    from sentence_transformers import SentenceTransformer

    from hfx.models.zoo import resolve_model

    return SentenceTransformer(resolve_model("minilm"), device="cpu")


def _st_pipeline(folder: str, mode: str, normalize: bool = False, max_len: int | None = None) -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    tr = Transformer(folder, max_seq_length=max_len)
    dim = tr.auto_model.get_input_embeddings().embedding_dim
    return SentenceTransformer(modules=[tr, Pooling(dim, mode), *([Normalize()] if normalize else [])], device="cpu")


def _same_batch(folder: str, mode: str, tokenizer: Any, model: Any, padding_side: str = "right") -> float:
    """hfx Embedder.forward vs sentence-transformers' forward on one padded batch."""
    from hfx_plugins.embed.embedder import Embedder

    st = _st_pipeline(folder, mode)
    tokenizer.padding_side = padding_side
    batch = dict(tokenizer(_TEXTS, padding=True, return_tensors="pt"))
    ours = Embedder(model, tokenizer, mode).eval()
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"])
        b = st(dict(batch))["sentence_embedding"]
    return (a - b).abs().max().item()


def _tiny(family: str, mode: str) -> float:
    from hfx.testing import save_tiny_model, tiny_model

    model, tok = tiny_model(family, "base", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_model(tmp, family, "base", seed=0)
        side = "left" if family == "llama" else "right"
        return _same_batch(tmp, mode, tok, model, side)


def _minilm_same_batch(mode: str) -> float:
    from hfx.models.loading import load_model
    from hfx.models.zoo import resolve_model

    model, tok = load_model("minilm", "base")
    return _same_batch(resolve_model("minilm"), mode, tok, model.eval())


def _minilm_encode(mode: str) -> float:
    import hfx
    from hfx.data.text import pydoc_sentences
    from hfx.models.zoo import resolve_model

    texts = pydoc_sentences()[:200] + _TEXTS
    st = _st_minilm() if mode == "mean" else _st_pipeline(resolve_model("minilm"), mode, True, 256)
    ours = hfx.embed("minilm", pooling=mode, normalize=True)
    return float(abs(ours.encode(texts, 32) - st.encode(texts, batch_size=32)).max())


def _loss_batch() -> list[torch.Tensor]:
    from hfx.data import load_bundled

    rows = load_bundled("pydoc_pairs")["test"].select(range(16))
    st = _st_minilm()
    return [st.encode(list(rows[c]), convert_to_tensor=True).clone() for c in ("anchor", "positive", "negative")]


def _loss_vs_st(kind: str) -> float:
    """Loss value and gradient w.r.t. the embeddings, hfx vs sentence-transformers, on the same embeddings."""
    from sentence_transformers.sentence_transformer import losses as st_losses

    from hfx_plugins.embed.losses import cosine_similarity_loss, mnrl_loss, triplet_loss

    embs = _loss_batch()
    st_model = _st_minilm()
    scores = torch.linspace(0.0, 1.0, embs[0].shape[0])
    if kind == "cosine":
        ours_fn, ref = (lambda e: cosine_similarity_loss(e[0], e[1], scores)), st_losses.CosineSimilarityLoss(st_model)
        ref_fn = lambda e: ref.compute_loss_from_embeddings(e[:2], scores)  # noqa: E731
    elif kind.startswith("triplet"):
        metric = kind.split("_")[1]
        margin = 0.3 if metric == "cosine" else 5.0
        dist = getattr(st_losses.TripletDistanceMetric, metric.upper())
        ref = st_losses.TripletLoss(st_model, distance_metric=dist, triplet_margin=margin)
        ours_fn = lambda e: triplet_loss(*e, margin=margin, distance=metric)  # noqa: E731
        ref_fn = lambda e: ref.compute_loss_from_embeddings(e, None)  # noqa: E731
    else:
        ref = st_losses.MultipleNegativesRankingLoss(st_model)
        n = 2 if kind == "mnrl" else 3  # mnrl_hard: with hard negatives
        ours_fn = lambda e: mnrl_loss(e[0], e[1], e[2:n])  # noqa: E731
        ref_fn = lambda e: ref.compute_loss_from_embeddings(e[:n], None)  # noqa: E731
    diffs = []
    outs = []
    for fn in (ours_fn, ref_fn):
        leaves = [e.detach().clone().requires_grad_() for e in embs]
        loss = fn(leaves)
        loss.backward()
        outs.append((loss.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in leaves]))
    diffs.append((outs[0][0] - outs[1][0]).abs().item())
    diffs += [(g1 - g2).abs().max().item() for g1, g2 in zip(outs[0][1], outs[1][1], strict=True)]
    return max(diffs)


def _cached_vs_st() -> float:
    """Parameter gradients of hfx's CachedMNRL vs sentence-transformers' CachedMultipleNegativesRankingLoss."""
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from hfx.testing import save_tiny_model, tiny_model
    from hfx_plugins.embed.cached import CachedMNRL
    from hfx_plugins.embed.embedder import Embedder

    # Eight words each, so every text has 10 tokens: sentence-transformers re-trims the padding of each
    # mini-batch and hfx does not, and with equal lengths neither pads, so both compute the same sums.
    texts = ["the function returns a new list of values", "a class may define its own special methods",
             "names are bound to objects at run time", "the value of the expression is not used",
             "an exception is raised when the call fails", "the module is executed in a new namespace"]
    model, tok = tiny_model("bert", "base", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_model(tmp, "bert", "base", seed=0)
        st = _st_pipeline(tmp, "mean").eval()  # eval: dropout off in both, so the two runs see the same network
    ours = Embedder(model, tok, "mean").eval()
    cols = [dict(tok(texts, padding=True, return_tensors="pt")), dict(tok(texts[1:] + texts[:1], padding=True, return_tensors="pt"))]
    CachedMultipleNegativesRankingLoss(st, mini_batch_size=2)([dict(c) for c in cols], None).backward()
    CachedMNRL(ours, mini_batch_size=2)([{k: c[k] for k in ("input_ids", "attention_mask")} for c in cols]).backward()
    ref = dict(st[0].auto_model.named_parameters())
    diffs, scale = [0.0], max(g.grad.abs().max().item() for g in ref.values() if g.grad is not None)
    for name, p in ours.backbone.named_parameters():
        if p.grad is None and ref[name].grad is None:
            continue  # the BERT pooler: no pooling mode reads it
        if p.grad is None or ref[name].grad is None:
            return float("inf")
        diffs.append((p.grad - ref[name].grad).abs().max().item())
    # Relative to the largest gradient (4.3 here): the two libraries split the loss computation into
    # different chunks, so the gradients agree to a few float32 ulps of their size, not to 1e-6 absolute.
    return max(diffs) / scale


def _saved_folder(name: str) -> float:
    import hfx

    with tempfile.TemporaryDirectory() as tmp:
        if name == "tiny":
            from hfx.testing import tiny_model

            model, tok = tiny_model("bert", "base", seed=0)
            emb = hfx.embed(model, "max", normalize=True, tokenizer=tok)
        else:
            emb = hfx.embed(name)
        hfx.save(emb, Path(tmp) / "st")
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(Path(tmp) / "st"), device="cpu")
        texts = _TEXTS + ["The with statement is used to wrap the execution of a block."]
        return float(abs(emb.encode(texts, 1) - st.encode(texts, batch_size=1)).max())


def checks() -> list[Check]:
    """``hfx validate plugin=embed``: pooling, encoding, losses and gradients vs sentence-transformers."""
    ref = "sentence-transformers"
    out = [Check(f"tiny bert {m} pooling vs Pooling('{m}'), same padded batch", ref, TOL, lambda m=m: _tiny("bert", m))
           for m in ("mean", "max", "cls", "weightedmean", "lasttoken")]
    out += [Check(f"tiny llama {m} pooling (left padding) vs Pooling('{m}')", ref, TOL, lambda m=m: _tiny("llama", m))
            for m in ("lasttoken", "weightedmean", "mean")]
    out += [Check(f"minilm {m} pooling vs sentence-transformers, same padded batch", ref, TOL,
                  lambda m=m: _minilm_same_batch(m)) for m in ("mean", "max", "cls")]
    out += [Check(f"minilm encode ({m}, normalised) vs SentenceTransformer.encode, batch 32", ref, TOL,
                  lambda m=m: _minilm_encode(m)) for m in ("mean", "max", "cls")]
    names = {"cosine": "CosineSimilarityLoss", "triplet_cosine": "TripletLoss (cosine, margin 0.3)",
             "triplet_euclidean": "TripletLoss (euclidean, margin 5)", "mnrl": "MultipleNegativesRankingLoss",
             "mnrl_hard": "MultipleNegativesRankingLoss with hard negatives"}
    out += [Check(f"{label}: value and embedding gradients", ref, TOL, lambda k=k: _loss_vs_st(k))
            for k, label in names.items()]
    out.append(Check("cached MNRL parameter gradients vs CachedMultipleNegativesRankingLoss (tiny bert, relative)", ref, TOL,
                     _cached_vs_st))
    out += [Check(f"hfx.save -> SentenceTransformer(path) embeddings ({n})", ref, TOL, lambda n=n: _saved_folder(n))
            for n in ("tiny", "minilm")]
    return out
