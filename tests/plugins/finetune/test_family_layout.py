"""hfx.save of a fine-tuned encoder classifier writes the family's own ``*ForSequenceClassification`` layout.

Expected: ``AutoModelForSequenceClassification.from_pretrained`` (transformers 5.25, the reference loader) reports
no missing / unexpected / mismatched key and gives hfx's logits; the head's structure is the one the family's
class builds (its parameter names and shapes, from ``from_config``).
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

import hfx
from hfx_plugins.finetune.family_heads import FamilyClassifier

B = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
         max_position_embeddings=64, pad_token_id=0)
CONFIGS = {
    "roberta": lambda: T.RobertaConfig(**B, type_vocab_size=1),
    "xlm-roberta": lambda: T.XLMRobertaConfig(**B),
    "deberta-v2": lambda: T.DebertaV2Config(**B, pooler_hidden_size=16, relative_attention=True, position_buckets=8,
                                            pos_att_type=["p2c", "c2p"]),
    "distilbert": lambda: T.DistilBertConfig(vocab_size=64, dim=16, n_layers=2, n_heads=4, hidden_dim=32,
                                             max_position_embeddings=64, pad_token_id=0),
    "modernbert": lambda: T.ModernBertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
                                             bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2),
    "modernbert-mean": lambda: T.ModernBertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=32,
                                                  max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                                                  eos_token_id=2, cls_token_id=1, sep_token_id=2,
                                                  classifier_pooling="mean"),
    "electra": lambda: T.ElectraConfig(**B, embedding_size=8),  # embedding_size != hidden_size: a projection
}


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 64, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a right-padded row
    return ids, mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_saved_classifier_loads_in_transformers_with_equal_logits(name: str, tmp_path) -> None:
    config = CONFIGS[name]()
    torch.manual_seed(0)
    model = hfx.apply(T.AutoModel.from_config(config), "finetune", num_labels=3)
    assert isinstance(model, FamilyClassifier)
    ref_config = CONFIGS[name]()
    ref_config.num_labels = 3
    reference = T.AutoModelForSequenceClassification.from_config(ref_config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference.state_dict().items()}  # the family's structure
    ids, mask = batch()
    labels = torch.tensor([0, 2, 1])
    # one training step, so that the head is not at its initialisation when saved
    model.train()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    model.eval()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    hfx.save(model, tmp_path / "clf")
    hf, info = T.AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ref = hf.eval()(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-6, atol=1e-6)  # transformers' loss, same rule
    torch.manual_seed(1)
    loaded = hfx.load(T.AutoModel.from_config(CONFIGS[name]()), tmp_path / "clf").eval()
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, out.logits, rtol=0, atol=0)


def test_freeze_base_trains_the_whole_family_head() -> None:
    model = hfx.apply(T.AutoModel.from_config(CONFIGS["distilbert"]()), "finetune", num_labels=2, freeze_base=True)
    trainable = sorted(k for k, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["classifier.bias", "classifier.weight", "pre_classifier.bias", "pre_classifier.weight"]


def test_dropout_of_the_family_head_follows_the_config() -> None:
    model = hfx.apply(T.AutoModel.from_config(CONFIGS["electra"]()), "finetune", num_labels=2, classifier_dropout=0.3)
    assert [m.p for m in model.classifier.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]
