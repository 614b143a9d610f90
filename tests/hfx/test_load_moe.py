"""hfx.load of hfx's own saved reward and finetune folders for MoE families with fused experts.

transformers 5's ``save_pretrained`` writes Mixtral's experts in the checkpoint layout (one ``w1/w2/w3`` per
expert) while the model holds them fused; the expected logits come from the model that was saved (round trip)
and from transformers' own loader (``AutoModelForSequenceClassification.from_pretrained``).
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

import hfx
from hfx.errors import HfxError
from tests.plugins.quant.test_moe import KINDS, moe_config


def backbone(kind: str, seed: int) -> T.PreTrainedModel:
    torch.manual_seed(seed)
    return T.AutoModel.from_config(moe_config(kind)).eval()


@pytest.mark.parametrize("plugin", ["reward", "finetune"])
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "olmoe"])
def test_saved_moe_head_round_trip(kind: str, plugin: str, tmp_path) -> None:
    kw = {"num_labels": 3} if plugin == "finetune" else {}
    model = hfx.apply(backbone(kind, 0), plugin, **kw).eval()
    ids = torch.randint(3, 64, (2, 9))
    mask = torch.ones_like(ids)
    out = model(input_ids=ids, attention_mask=mask)
    ref = out.logits if hasattr(out, "logits") else out
    hfx.save(model, tmp_path / plugin)
    loaded = hfx.load(backbone(kind, 1), tmp_path / plugin).eval()  # other random weights: all must be loaded
    got = loaded(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(got.logits if hasattr(got, "logits") else got, ref, rtol=0, atol=0)
    hf = T.AutoModelForSequenceClassification.from_pretrained(tmp_path / plugin).eval()
    shift = float(getattr(hf.config, "reward_shift", 0.0))  # decoders keep the reward shift outside the weights
    expected = ref - shift if plugin == "reward" else ref
    torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plugin", ["reward", "finetune"])
def test_no_transformers_classifier_is_refused_at_save(plugin: str, tmp_path) -> None:
    # transformers 5.25 has no OlmoeForSequenceClassification (AutoModelForSequenceClassification refuses the config)
    model = hfx.apply(backbone("olmoe", 0), plugin, **({"num_labels": 3} if plugin == "finetune" else {}))
    with pytest.raises(HfxError, match="no \\*ForSequenceClassification for model type 'olmoe'"):
        hfx.save(model, tmp_path / plugin)
