"""``hfx.embed`` on a prompt- or prefix-tuned model embeds through the prompt, pooling real tokens only.

Before, the embedder called the bare backbone, which the plugins' hooks (on the ``...ForCausalLM``) never saw: the
vectors were the base model's. The expected vectors here are hand computations on the plain tiny model: prompt
tuning's rows put in front of the token embeddings and the virtual positions left out of the pooling; prefix
tuning's keys and values given as the past key values of every layer.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DynamicCache

import hfx
from hfx.errors import HfxError
from hfx.pooling import cls_pool, gather_last, mean_pool
from hfx.testing import tiny_model
from hfx_plugins.prefix_tuning import layer_states

N = 4  # virtual tokens
TEXTS = ["the function returns a new list", "a class may define methods", "print"]
POOL = {"mean": mean_pool, "lasttoken": gather_last, "cls": cls_pool}


def _hand_prompt(base, trunk, prompt: torch.Tensor, ids: torch.Tensor, mode: str) -> np.ndarray:
    """Pooled (1, H): the prompt's (n, d) rows in front of the ids' embeddings, the n virtual positions dropped."""
    embeds = torch.cat([prompt[None], base.get_input_embeddings()(ids)], 1)  # (1, n + T, d)
    hidden = trunk(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2])).last_hidden_state[:, N:]
    return POOL[mode](hidden, torch.ones(ids.shape)).numpy()  # (1, H) over the T real tokens


@pytest.mark.parametrize("family", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("mode", ["mean", "lasttoken", "cls"])
def test_embed_reads_the_prompt_of_a_prompt_tuned_model(family: str, mode: str) -> None:
    task = "seq2seq-lm" if family == "t5" else "causal-lm"
    base, tok = tiny_model(family, task, 0)
    model = hfx.apply(copy.deepcopy(base), "prompt_tuning", num_virtual_tokens=N)
    got = hfx.embed(model, mode, tokenizer=tok).encode(TEXTS)  # (3, H)
    plain = hfx.embed(copy.deepcopy(base), mode, tokenizer=tok).encode(TEXTS)
    trunk = base.get_encoder() if family == "t5" else base.base_model
    with torch.no_grad():
        prompt = model.prompt_encoder()[:N]
        want = np.concatenate([_hand_prompt(base, trunk, prompt, torch.tensor([tok(t)["input_ids"]]), mode)
                               for t in TEXTS])
    assert np.abs(got - plain).max() > 1e-3  # the base model's vectors were returned before
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_embed_reads_the_prefix_of_a_prefix_tuned_model(family: str) -> None:
    base, tok = tiny_model(family, "causal-lm", 0)
    model = hfx.apply(copy.deepcopy(base), "prefix_tuning", num_virtual_tokens=N)
    got = hfx.embed(model, "mean", tokenizer=tok).encode(TEXTS)
    plain = hfx.embed(copy.deepcopy(base), "mean", tokenizer=tok).encode(TEXTS)
    cfg = base.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    want = []
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([tok(text)["input_ids"]])
            cache = DynamicCache(config=cfg)
            for i, (k, v) in enumerate(layer_states(model.prefix_encoder(), 1, cfg.num_hidden_layers, heads, 1,
                                                    torch.float32)):
                cache.update(k, v, i)
            hidden = base.base_model(input_ids=ids, attention_mask=torch.ones(1, N + ids.shape[1]),
                                     cache=cache).last_hidden_state  # (1, T, H): positions n .. n + T - 1
            want.append(mean_pool(hidden, torch.ones(ids.shape)).numpy())
    assert np.abs(got - plain).max() > 1e-3
    np.testing.assert_allclose(got, np.concatenate(want), rtol=1e-5, atol=1e-5)


def test_a_padded_batch_pools_real_tokens_only() -> None:
    # Source: the unpadded vectors of encode (each text alone); the padded batch's virtual and pad positions are 0
    # in the pooling mask, so the vectors agree.
    base, tok = tiny_model("llama", "causal-lm", 0)
    embedder = hfx.embed(hfx.apply(base, "prompt_tuning", num_virtual_tokens=N), "mean", tokenizer=tok)
    with torch.no_grad():
        batch = embedder(**embedder.tokenize(TEXTS)).numpy()
    np.testing.assert_allclose(batch, embedder.encode(TEXTS), rtol=1e-5, atol=1e-5)


def test_a_prefix_tuned_encoder_decoder_is_refused_naming_both_plugins() -> None:
    base, tok = tiny_model("t5", "seq2seq-lm", 0)
    model = hfx.apply(base, "prefix_tuning", num_virtual_tokens=N)
    with pytest.raises(HfxError, match="embed cannot pool a prefix_tuning encoder-decoder") as err:
        hfx.embed(model, "mean", tokenizer=tok)
    assert "\n" not in str(err.value)


def test_saving_drops_no_prompt_silently(tmp_path: Path) -> None:
    base, tok = tiny_model("llama", "causal-lm", 0)
    embedder = hfx.embed(hfx.apply(base, "prompt_tuning", num_virtual_tokens=N), "mean", tokenizer=tok)
    with pytest.raises(HfxError, match="embed cannot save a prompt_tuning model as a sentence-transformers folder"):
        hfx.save(embedder, tmp_path / "st")


def test_training_the_embedder_trains_the_prompt_and_only_the_prompt() -> None:
    # prompt_tuning froze the model; its prompt is the embedder's one trainable tensor, and a loss on the vectors
    # reaches it (a cosine loss between two texts' vectors, one SGD step).
    base, tok = tiny_model("llama", "causal-lm", 0)
    embedder = hfx.embed(hfx.apply(base, "prompt_tuning", num_virtual_tokens=N), "mean", tokenizer=tok)
    trainable = [n for n, p in embedder.named_parameters() if p.requires_grad]
    assert trainable == ["prompt_tuning.embedding.weight"]
    before = embedder.prompt_tuning.embedding.weight.detach().clone()
    vectors = embedder(**embedder.tokenize(TEXTS[:2]))  # (2, H)
    torch.nn.functional.cosine_similarity(vectors[:1], vectors[1:]).sum().backward()
    torch.optim.SGD(embedder.parameters(), lr=1.0).step()
    assert (embedder.prompt_tuning.embedding.weight - before).abs().max() > 0


@pytest.mark.parametrize("method", ["PromptTuningConfig", "PrefixTuningConfig"])
def test_a_peft_prompt_learning_model_is_embedded_through_its_prompt(method: str, tmp_path: Path) -> None:
    # peft's own prompt learning (get_peft_model): embedded through peft's wrapper. Expected: prompt tuning, the
    # hand computation above with peft's prompt rows; prefix tuning, hfx's prefix-tuned model loading the same
    # adapter (checked against the past-key-values hand computation in the test above).
    import peft

    base, tok = tiny_model("llama", "causal-lm", 0)
    theirs = peft.get_peft_model(copy.deepcopy(base), getattr(peft, method)(num_virtual_tokens=N,
                                                                            task_type="CAUSAL_LM")).eval()
    got = hfx.embed(theirs, "mean", tokenizer=tok).encode(TEXTS)
    plain = hfx.embed(copy.deepcopy(base), "mean", tokenizer=tok).encode(TEXTS)
    with torch.no_grad():
        if method == "PromptTuningConfig":
            prompt = theirs.prompt_encoder["default"].embedding.weight[:N]
            want = np.concatenate([_hand_prompt(base, base.base_model, prompt, torch.tensor([tok(t)["input_ids"]]),
                                                "mean") for t in TEXTS])
        else:
            theirs.save_pretrained(tmp_path / "prefix")
            want = hfx.embed(hfx.load(copy.deepcopy(base), tmp_path / "prefix"), "mean", tokenizer=tok).encode(TEXTS)
    assert np.abs(got - plain).max() > 1e-3  # before: the base model's vectors (get_base_model's backbone)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_peft_prompt_learning_encoder_decoder_is_refused() -> None:
    import peft

    base, tok = tiny_model("t5", "seq2seq-lm", 0)
    theirs = peft.get_peft_model(base, peft.PromptTuningConfig(num_virtual_tokens=N, task_type="SEQ_2_SEQ_LM"))
    with pytest.raises(HfxError, match="embed cannot pool a peft PROMPT_TUNING encoder-decoder"):
        hfx.embed(theirs, "mean", tokenizer=tok)
