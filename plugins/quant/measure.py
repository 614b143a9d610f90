"""Measurements shared by the recipe and the benchmark: perplexity, storage, bitsandbytes rows, embeddings.

The bitsandbytes rows replace exactly the layers hfx quantizes (:func:`select_linear`) with
``Linear8bitLt`` (threshold 0: LLM.int8's vector-wise quantization without its outlier split, Dettmers et al.
2022, https://arxiv.org/abs/2208.07339) or ``Linear4bit`` (blocksize 64, no
double quantization, fp32 compute), so both sides quantize the same weights and run on the same text.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hfx.pooling import mean_pool
from hfx_plugins.quant.apply import select_linear, set_module
from hfx_plugins.quant.layer import linear_weight

__all__ = ["bnb_bits_per_param", "bnb_quantize", "disk_bytes", "embed", "embedding_agreement", "perplexity"]


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 2) -> float:
    """exp(mean next-token NLL) over every window of ``windows`` (n, T); each window is scored on its own."""
    model.eval()
    nll, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start:start + batch_size]  # (B, T)
        logits = model(input_ids=ids).logits[:, :-1].float()  # (B, T-1, V): position t predicts t+1
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum").item()
        count += ids[:, 1:].numel()
    return math.exp(nll / count)


def disk_bytes(save_fn, model: nn.Module) -> int:  # type: ignore[no-untyped-def]
    """Bytes of the ``*.safetensors`` files that ``save_fn(model, folder)`` writes."""
    with tempfile.TemporaryDirectory() as tmp:
        save_fn(model, Path(tmp))
        return sum(p.stat().st_size for p in Path(tmp).rglob("*.safetensors"))


def bnb_quantize(model: nn.Module, kind: str, names: list[str] | None = None) -> nn.Module:
    """Replace the layers hfx would quantize by bitsandbytes int8 (``"int8"``), ``"nf4"`` or ``"fp4"`` ones."""
    import bitsandbytes as bnb

    for name in names or select_linear(model, "all-linear", []):
        old = model.get_submodule(name)
        w = linear_weight(old).detach().float().contiguous()  # (out, in)
        out, inp = w.shape
        has_bias = old.bias is not None
        if kind == "int8":
            new = bnb.nn.Linear8bitLt(inp, out, bias=has_bias, has_fp16_weights=False, threshold=0.0)
            new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(inp, out, bias=has_bias, compute_dtype=torch.float32,
                                    compress_statistics=False, quant_type=kind)
            new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=kind, blocksize=64,
                                           compress_statistics=False)
        if has_bias:
            new.bias = nn.Parameter(old.bias.detach().float().clone(), requires_grad=False)
        set_module(model, name, new.to("cpu"))  # moving to a device is what makes bitsandbytes quantize
    return model


def bnb_bits_per_param(kind: str, group: int = 64) -> float:
    """Storage of bitsandbytes' layouts: int8 + one fp32 row scale (negligible), nf4/fp4 + fp32 absmax per block."""
    return 8.0 if kind == "int8" else 4.0 + 32.0 / group


@torch.no_grad()
def embed(model: nn.Module, tokenizer, sentences: list[str], batch_size: int = 64) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """all-MiniLM-L6-v2's sentence embedding: mean of the token states over the mask, L2-normalised. (N, H)"""
    model.eval()
    out = []
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True, max_length=128,
                        return_tensors="pt")
        h = model(**enc).last_hidden_state  # (B, T, H)
        out.append(F.normalize(mean_pool(h, enc["attention_mask"]), dim=-1))  # (B, H)
    return torch.cat(out)


def embedding_agreement(ref: torch.Tensor, got: torch.Tensor) -> dict[str, float]:
    """Mean cosine to the fp32 embeddings, Spearman of all pairwise similarities, top-1 neighbour agreement.

    ``ref`` and ``got`` are (N, H) L2-normalised sentence embeddings of the same N sentences.
    """
    from scipy.stats import spearmanr

    cos = (ref * got).sum(-1).mean().item()
    iu = torch.triu_indices(ref.shape[0], ref.shape[0], offset=1)
    s_ref, s_got = ref @ ref.T, got @ got.T  # (N, N)
    rho = float(spearmanr(s_ref[iu[0], iu[1]].numpy(), s_got[iu[0], iu[1]].numpy()).statistic)
    eye = torch.eye(ref.shape[0], dtype=torch.bool)
    top_ref = s_ref.masked_fill(eye, -2).argmax(-1)  # nearest other sentence, (N,)
    top_got = s_got.masked_fill(eye, -2).argmax(-1)
    return {"cosine": cos, "spearman": rho, "top1_agreement": (top_ref == top_got).float().mean().item()}
