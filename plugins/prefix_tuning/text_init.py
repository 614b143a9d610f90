"""Start a prefix from the keys and values a real text leaves in the model's cache (Li & Liang 2021, §7.2).

Li & Liang (https://arxiv.org/abs/2101.00190) found that initialising the prefix with the activations of real
words trains better than a random prefix, most of all with little data. peft 0.21.2 has no such option: its
prefix starts at N(0, 1) (or zero, ``init_weights="zero"``). N(0, 1) is far from what a trained model's layers
hold (smollm2-135m's first-layer values have a standard deviation of about 0.05), so a random prefix dominates
the attention of the layers it is added to. Starting from a text's own keys and values, the prefix-tuned model
is at first exactly the frozen model reading that text before its input, and training moves on from there.

The init writes the flat prefix only, so it needs ``prefix_projection`` off; the adapter saved afterwards is a
plain peft prefix (nothing records where it started).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hfx.errors import HfxError
from hfx_plugins.prefix_tuning.apply import get_encoder

__all__ = ["init_from_text"]


@torch.no_grad()
def init_from_text(model: nn.Module, tokenizer: Any, text: str) -> list[int]:
    """Overwrite the prefix of a prefix-tuned decoder with the keys and values of ``text`` read by the model.

    The text's token ids (special tokens included, as ``tokenizer(text)`` gives them, like peft's TEXT init of
    prompt tuning) are repeated or cut to ``num_virtual_tokens``, run through the model with its prefix
    switched off, and each layer's cache entries ``(1, H_kv, n, head_dim)`` are written into the flat prefix
    ``(n, L * 2 * d)`` in peft's layout (per virtual token ``[L0.K, L0.V, L1.K, L1.V, ...]``). The keys carry
    the rotary positions ``0 .. n - 1``, which is where the prefix sits: the real tokens follow at ``n``.

    Returns:
        The ``n`` token ids the prefix was computed from.

    Raises:
        HfxError: no prefix, ``prefix_projection`` on, an encoder-decoder model, or a text with no tokens.
    """
    enc = get_encoder(model)
    cfg = enc.config
    if cfg.prefix_projection:
        raise HfxError("prefix_tuning: a text init writes the prefix itself; it needs prefix_projection=false")
    if cfg.num_transformer_submodules != 1:
        raise HfxError("prefix_tuning: the text init serves decoder models only")
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise HfxError(f"prefix_tuning: the init text {text!r} has no tokens")
    n = cfg.num_virtual_tokens
    ids = (ids * (n // len(ids) + 1))[:n]
    device = enc.embedding.weight.device
    was_on, enc.injector.enabled = enc.injector.enabled, False
    try:
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
    finally:
        enc.injector.enabled = was_on
    cache = out.cache if "cache" in out else out.past_key_values  # renamed in transformers 5.24
    layers = [cache.layers[i] for i in range(cfg.num_layers)]
    kv = torch.stack([t[0] for layer in layers for t in (layer.keys, layer.values)])  # (2L, H, n, hd)
    flat = kv.permute(2, 0, 1, 3).reshape(n, -1)  # (n, L * 2 * H * hd): the inverse of cache.layer_states
    enc.embedding.weight.copy_(flat.to(enc.embedding.weight.dtype))
    return ids
