"""hfx.pooling and hfx.heads against the reference libraries' own outputs, on tiny models, left and right padded.

Expected values come from the reference libraries run on the same weights and texts: sentence-transformers'
``SentenceTransformer.encode`` (Transformer + Pooling modules) for mean / max / cls / lasttoken /
weightedmean, and transformers' ``LlamaForSequenceClassification`` / ``BertForSequenceClassification`` for
the score head.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hfx.data.text import pydoc_sentences
from hfx.errors import HfxError
from hfx.heads import ScoreModel
from hfx.pooling import cls_pool, gather_last, max_pool, mean_pool, weighted_mean_pool
from hfx.testing import save_tiny_model, tiny_model

TEXTS = [*pydoc_sentences()[:5], "a", "the function returns"]  # lengths differ: every row but one is padded
POOLERS = {"mean": mean_pool, "max": max_pool, "cls": cls_pool, "lasttoken": gather_last,
           "weightedmean": weighted_mean_pool}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: save_tiny_model(root / family, family, "base", seed=0) for family in ("bert", "llama")}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", list(POOLERS))
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_pooling_matches_sentence_transformers(folders: dict[str, Path], family: str, mode: str, side: str) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    st = SentenceTransformer(modules=[Transformer(str(folders[family])), Pooling(32, mode)], device="cpu").eval()
    st[0].tokenizer.padding_side = side
    features = st.tokenize(TEXTS)  # sentence-transformers' own ids (its Transformer may template the text)
    mask = features["attention_mask"]  # (B, T)
    assert not mask[:, -1 if side == "right" else 0].all()  # the batch is padded on `side`
    inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    model, _ = tiny_model(family, "base", seed=0)
    with torch.no_grad():
        want = st(dict(features))["sentence_embedding"]  # (B, H)
        hidden = model.eval()(**inputs).last_hidden_state  # (B, T, H)
    got = POOLERS[mode](hidden, mask)  # (B, H)
    # Same weights, same padded batch, same arithmetic: equal to rounding.
    assert (got - want).abs().max().item() <= 1e-6


@pytest.mark.parametrize("pooler", [mean_pool, weighted_mean_pool])
def test_half_precision_is_summed_in_float32_as_sentence_transformers(pooler) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 300, 64, generator=g).to(torch.bfloat16)  # (B, T, H)
    mask = (torch.arange(300)[None] < torch.tensor([[300], [171], [9]])).long()  # (B, T), right padded
    mode = "mean" if pooler is mean_pool else "weightedmean"
    want = Pooling(64, mode)({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    got = pooler(hidden, mask)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    if pooler is mean_pool:  # control: summing in bf16 itself (hfx's mean before) gives other vectors
        m = mask.unsqueeze(-1).to(hidden.dtype)
        assert not torch.equal((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), want)


def test_pooling_by_hand_on_left_and_right_padding() -> None:
    hidden = torch.tensor([[[1.0], [2.0], [4.0], [100.0]], [[100.0], [1.0], [2.0], [4.0]]])  # (2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])  # right, left
    for fn, value in [(mean_pool, 7 / 3), (max_pool, 4.0), (cls_pool, 1.0), (gather_last, 4.0),
                      (weighted_mean_pool, 17 / 6)]:  # weights 1, 2, 3: (1 + 4 + 12) / 6
        assert torch.allclose(fn(hidden, mask), torch.full((2, 1), value)), fn.__name__


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_score_head_matches_transformers_sequence_classification(family: str, side: str) -> None:
    hf, tok = tiny_model(family, "sequence-classification", seed=0, num_labels=3)
    hf.eval()
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id  # a pad id no text contains
    ours = ScoreModel(getattr(hf, hf.base_model_prefix), 3, head=hf.score if family == "llama" else hf.classifier)
    if family == "bert":
        ours.dropout = hf.dropout
    tok.padding_side = side
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = hf(**enc).logits  # (B, 3): transformers' own pooling (rightmost non-pad id / pooler)
        got, _ = ours.eval().logits(**enc)
        # No mask: hfx falls back on transformers' rule (the ids that are not the pad id are real).
        got_no_mask, _ = ours.logits(enc["input_ids"])
        want_no_mask = hf(input_ids=enc["input_ids"]).logits
    assert (got - want).abs().max().item() <= 1e-6
    if family == "llama":  # (an encoder without a mask attends to the pads: no pooling rule can agree)
        assert (got_no_mask - want_no_mask).abs().max().item() <= 1e-6


def test_reward_model_without_a_mask_reads_the_last_non_pad_token() -> None:
    # Before, the reward head took every position as real when no mask came; transformers reads the rightmost
    # id that is not the pad id (LlamaForSequenceClassification, num_labels=1), and so does hfx now.
    import hfx

    hf, tok = tiny_model("llama", "sequence-classification", seed=0, num_labels=1)
    reward = hfx.apply(hf.eval(), "reward").eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")  # right padded with a pad id that is not EOS
    with torch.no_grad():
        want = hf(input_ids=enc["input_ids"]).logits  # (B, 1)
        got = reward(input_ids=enc["input_ids"]).logits
    assert (got - want).abs().max().item() <= 1e-6


def test_score_head_refuses_a_head_of_another_size() -> None:
    hf, _ = tiny_model("llama", "sequence-classification", seed=0, num_labels=2)
    with pytest.raises(HfxError, match="the head has 2 outputs; 1 were asked for"):
        ScoreModel(hf.model, 1, head=hf.score)
