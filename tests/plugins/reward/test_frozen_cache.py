"""The frozen-block cache: training the top blocks on cached activations equals training through the whole model.

The expected values are the full forward's own scores and gradients (the cache is an exact rewrite of the
same computation, so they must agree to float32 round-off; 1e-5 leaves room for different matmul shapes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

import hfx
from hfx.testing import tiny_model
from hfx_plugins.reward import RewardConfig
from hfx_plugins.reward.batching import GroupCollator, batch_loss, encode_groups
from hfx_plugins.reward.data import rankings_to_groups
from hfx_plugins.reward.frozen import FrozenCache, exact_on, first_trainable_block
from tests.plugins.reward.test_training import toy_rankings


def _reward_model(family: str, trainable_layers: int) -> tuple[torch.nn.Module, object]:
    model, tok = tiny_model(family, "base", 0, dropout=0.0)
    return hfx.apply(model, "reward", cfg=RewardConfig(trainable_layers=trainable_layers)), tok


def test_first_trainable_block() -> None:
    model, _ = _reward_model("llama", 1)
    n = model.config.num_hidden_layers
    assert first_trainable_block(model) == n - 1
    assert first_trainable_block(_reward_model("llama", -1)[0]) is None  # every weight trains: nothing to cache
    assert first_trainable_block(_reward_model("bert", 1)[0]) is None  # encoders are not cached


def test_cached_scores_and_gradients_equal_the_full_forward() -> None:
    model, tok = _reward_model("llama", 1)
    first = first_trainable_block(model)
    cfg = RewardConfig(max_length=32, trainable_layers=1)
    items = encode_groups(rankings_to_groups(toy_rankings(12, 0)), tok, cfg)
    # left padding for the full forward: the cache pads on the right, so this also checks padding independence
    batch = GroupCollator(tok.pad_token_id, "left")(items[:4])
    cache = FrozenCache(model, first, tok.pad_token_id, batch_size=5)  # batches unlike the training batch
    cache.fill([ids for item in items for ids in item["ids"]])
    model.train()

    full = batch_loss(model, batch, cfg)
    full.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    cached = batch_loss(model, batch, cfg, scorer=lambda b: cache.scores(b["texts"]))
    cached.backward()
    assert torch.allclose(full, cached, atol=1e-6)
    for name, grad in grads.items():
        assert torch.allclose(grad, dict(model.named_parameters())[name].grad, atol=1e-5), name
    assert len(list(model.backbone.layers)) == model.config.num_hidden_layers  # the block list is restored


def test_gpt2_is_not_exact_and_is_refused() -> None:
    # GPT-2 adds position embeddings to inputs_embeds, so the cached states would be shifted a second time
    model, tok = _reward_model("gpt2", 1)
    ids = tok(["a b c", "d e"])["input_ids"]
    assert not exact_on(model, ids, first_trainable_block(model) or 1, tok.pad_token_id)
    llama, ltok = _reward_model("llama", 1)
    assert exact_on(llama, ltok(["a b c", "d e"])["input_ids"], first_trainable_block(llama), ltok.pad_token_id)


def test_hfx_run_uses_the_cache_and_matches_the_uncached_run(cli: Callable, tiny_llama_dir: Path,
                                                             tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, (n, seed) in {"train": (32, 0), "test": (12, 1)}.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rankings(n, seed)))
    after = {}
    for cache in ("true", "false"):
        res = cli("run", "plugin=reward", f"model={tiny_llama_dir}", f"data.path={data}", "train.max_steps=4",
                  "train.batch_size=4", "reward.max_length=32", "reward.trainable_layers=1",
                  f"reward.cache_frozen={cache}", f"output_dir={tmp_path / cache}")
        assert res.code == 0, res.err[-2000:]
        assert ("each step runs the blocks" in res.out) == (cache == "true")
        (run,) = [p for p in (tmp_path / cache).iterdir() if p.is_dir()]
        after[cache] = json.loads((run / "summary.json").read_text())["after"]
    for key in ("accuracy", "margin", "spearman", "mean_score"):  # mean_score carries the final shift
        assert abs(after["true"][key] - after["false"][key]) < 1e-4, key
