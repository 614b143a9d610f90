"""The real offline models (minilm, smollm2-135m, minilm2minilm): slow, run with `pytest -m slow`.

The conversions run into a fresh temporary HFX_CACHE, so they are exercised every time (~45 s for the
GGUF de-quantization on 2 cores, ~2 s for the encoder-decoder warm start).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hfx.models import cache_dir, load_model, resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hfx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh HFX_CACHE for the whole module (the conversions happen once here)."""
    root = tmp_path_factory.mktemp("hfx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HFX_CACHE", str(root))
        yield root


def _mean_pool(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    hidden = model(**batch).last_hidden_state  # (B, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    emb = (hidden * mask).sum(1) / mask.sum(1)  # (B, 384)
    return torch.nn.functional.normalize(emb, dim=-1)


def test_minilm_embeds_like_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    model, tok = load_model("minilm", "base")
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]
    with torch.no_grad():
        emb = _mean_pool(model, tok(texts, padding=True, return_tensors="pt"))  # (3, 384)
    # reference: sentence-transformers' own pipeline (mean pooling + normalize) on the same folder
    ref = SentenceTransformer(resolve_model("minilm"), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(emb, ref, atol=1e-5, rtol=1e-4)
    sim = emb @ emb.T  # (3, 3) cosine similarities
    assert sim[0, 1] > sim[0, 2]  # eating food is closer to eating bread than to riding a horse


def test_smollm2_converts_caches_and_answers(hfx_cache: Path) -> None:
    start = time.perf_counter()
    folder = Path(resolve_model("smollm2-135m"))  # de-quantizes the GGUF and caches fp32 safetensors
    convert_s = time.perf_counter() - start
    assert folder == cache_dir() / "smollm2-135m" and folder.parent.parent == hfx_cache
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no temporary sibling left
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"

    start = time.perf_counter()
    model, tok = load_model("smollm2-135m")
    reload_s = time.perf_counter() - start
    print(f"smollm2-135m: conversion {convert_s:.1f} s, cached reload {reload_s:.1f} s")
    assert reload_s < 15  # measured ~1 s here (0.5 s unloaded); the conversion takes ~45 s
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M, embeddings tied

    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)  # (1, T + <= 16)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer  # measured: "The capital of France is Paris."


def test_minilm2minilm_loads_and_generates(hfx_cache: Path) -> None:
    model, tok = load_model("minilm2minilm")
    assert type(model).__name__ == "EncoderDecoderModel"
    assert model.config.decoder_start_token_id == tok.cls_token_id and model.config.pad_token_id == tok.pad_token_id
    batch = tok(["The capital of France is Paris."], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)  # (1, 1 + <= 5)
    assert out[0, 0].item() == tok.cls_token_id and 2 <= out.shape[1] <= 6
    # the cached copy reloads with the same (seeded) cross-attention weights
    again, _ = load_model("minilm2minilm")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
