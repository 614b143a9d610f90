"""``hfx.embed`` on architectures whose structure departs from BERT's: ELECTRA's ``embedding_size`` (16) differs
from its ``hidden_size`` (32), a projection between the two (ELECTRA-small: 128 -> 256).

Independent source: sentence-transformers' own ``Transformer`` + ``Pooling`` on the same saved folder: its
dimension (``get_word_embedding_dimension``, the config's ``hidden_size``) and its vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ElectraConfig, ElectraModel

import hfx
from hfx.testing import tiny_tokenizer

TEXTS = ["the function returns a new list of values", "a class", "each object has an identity a type and a value"]


@pytest.fixture(scope="module")
def electra(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = tiny_tokenizer("bert")
    config = ElectraConfig(vocab_size=len(tok), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                           pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("electra")
    ElectraModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("mode", ["mean", "cls"])
def test_electra_dimension_and_vectors_match_sentence_transformers(electra: Path, mode: str) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    transformer = Transformer(str(electra))
    st_dim = transformer.get_word_embedding_dimension()
    st = SentenceTransformer(modules=[transformer, Pooling(st_dim, mode)], device="cpu")
    ours = hfx.embed(electra, mode)
    assert ours.dim == st_dim == 32  # the hidden size, not the 16-wide embedding table
    got = ours.encode(TEXTS)
    assert got.shape == (3, 32)
    assert np.abs(got - st.encode(TEXTS)).max() <= 1e-6  # the embed plugin's bound (it pads, hfx does not)
    assert ours.encode([]).shape == (0, 32)


def test_electra_saved_embedder_loads_in_sentence_transformers(electra: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    ours = hfx.embed(electra, "mean")
    hfx.save(ours, tmp_path / "st")
    st = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert st.get_sentence_embedding_dimension() == 32
    assert np.abs(st.encode(TEXTS) - ours.encode(TEXTS)).max() <= 1e-6
