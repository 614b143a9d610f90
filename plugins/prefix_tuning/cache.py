"""How the prefix reaches the attention layers: as the first ``n`` entries of the model's KV cache.

A forward pre-hook on the model (not a wrapper: the model stays a transformers model) does what peft 0.21.2's
``PeftModelForCausalLM.forward`` / ``prepare_inputs_for_generation`` do (``peft/peft_model.py``), on every call,
``generate()``'s included:

- an empty or absent cache is filled with the prefix, per layer ``(B, H_kv, n, head_dim)`` (self-attention
  only for encoder-decoder models, as peft does);
- the 2-D attention mask gets ``n`` ones in front (``cat(ones(B, n), mask)``);
- explicit position ids move by ``n`` (peft >= 0.19; without them the model counts from the cache length, so the
  real tokens sit at ``n ... n + T - 1`` either way; the prefix keys carry no rotary position);
- the cache goes in under the name the model's forward takes: ``cache`` on transformers >= 5.24, which renamed
  ``past_key_values``; peft 0.21.2 passes only ``past_key_values`` and so drops the prefix in ``generate()``.

On a model with sliding-window layers the prefix must stay inside the window: every call checks that prefix +
cached + new tokens fit (:func:`check_cache_layout` finds the window).

Gradient checkpointing is refused: transformers replays checkpointed layers without the cache
(``modeling_layers.GradientCheckpointingLayer`` sets ``cache=None``), which would silently drop the prefix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from hfx.errors import HfxError
from hfx_plugins.prefix_tuning.encoder import PrefixEncoder
from hfx_plugins.prompt_learning import bind_inputs, cache_argument, extend_mask

__all__ = ["PrefixInjector", "check_cache_layout", "layer_states"]


def layer_states(flat: torch.Tensor, batch: int, num_layers: int, heads: int, submodules: int,
                 dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values), each ``(B, H_kv, n, head_dim)``, from the flat prefix ``(n, L * 2 * d)``.

    peft's ``get_prompt`` layout: view as ``(B, n, 2L, H, hd)``, repeated along the layer axis for encoder-decoder
    models (``num_transformer_submodules`` 2), permuted to ``(2L s, B, H, n, hd)`` and split in chunks of ``2 s``; a
    chunk's first two entries are the layer's self-attention keys and values. With s = 2 this makes decoder layer
    ``i`` read entries ``(4i, 4i + 1) mod 2L`` of the flat vector (layer ``2i mod L``'s); hfx keeps that mapping so
    that adapters mean the same thing in both libraries.
    """
    n, width = flat.shape
    hd = width // (num_layers * 2 * heads)
    x = flat.to(dtype).unsqueeze(0).expand(batch, n, width).reshape(batch, n, num_layers * 2, heads, hd)
    if submodules == 2:
        x = torch.cat([x, x], dim=2)  # (B, n, 4L, H, hd)
    chunks = x.permute(2, 0, 3, 1, 4).split(submodules * 2)  # L chunks of (2s, B, H, n, hd)
    return [(c[0], c[1]) for c in chunks]


def check_cache_layout(model: nn.Module, num_virtual_tokens: int) -> int | None:
    """The sliding window the prefix must fit in (None: every layer keeps all keys), or a refusal.

    A model whose cache layers are plain growing ones (``DynamicLayer``) or sliding-window ones
    (``DynamicSlidingWindowLayer``: Mistral v0.1, Phi-3-mini-4k, Qwen2 with ``use_sliding_window``, and Gemma 2
    and Gemma 3's text model, which mix sliding and global layers) takes the prefix as past key values. A sliding
    layer keeps the last ``sliding_window`` positions, prefix included, so while prefix + sequence fit in the
    window it attends to all of them, as a global layer does, and the model computes what it computes with the
    prefix given as past key values (peft's prefix tuning); :class:`PrefixInjector` refuses a longer sequence.

    Raises:
        HfxError: a layer of another kind (linear-attention or recurrent), KV shapes that differ per layer
            (Gemma 4, Gemma 3's multimodal model), or a prefix as long as the window or longer.
    """
    config = model.config
    if getattr(config, "model_type", "") in ("gemma3", "gemma4"):
        raise HfxError(f"prefix_tuning does not support {config.model_type} (its layers' KV shapes or inputs differ "
                       "per layer or per modality); use prompt_tuning or lora")
    layers = DynamicCache(config=config).layers
    bad = next((i for i, layer in enumerate(layers) if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer)),
               None)
    if bad is not None:
        raise HfxError(f"prefix_tuning cannot prefix {type(model).__name__}: cache layer {bad} is "
                       f"{type(layers[bad]).__name__} (linear-attention or recurrent), which would drop or ignore the "
                       "prefix; use prompt_tuning or lora")
    windows = [layer.sliding_window for layer in layers if isinstance(layer, DynamicSlidingWindowLayer)]
    window = min(windows) if windows else None
    if window is not None and num_virtual_tokens >= window:
        raise HfxError(f"prefix_tuning.num_virtual_tokens={num_virtual_tokens} does not fit {type(model).__name__}'s "
                       f"sliding window of {window} positions, which must hold the prefix and the sequence; use fewer "
                       "virtual tokens")
    return window


class PrefixInjector:
    """The forward pre-hook that puts the prefix into the model's cache, mask and positions (see module docstring)."""

    def __init__(self, encoder: PrefixEncoder, num_virtual_tokens: int, num_layers: int, heads: int,
                 submodules: int, window: int | None = None) -> None:
        self.encoder, self.n, self.num_layers, self.heads, self.submodules = (
            encoder, num_virtual_tokens, num_layers, heads, submodules)
        self.window = window  # the smallest sliding window of the model's layers (check_cache_layout), or None
        self.enabled = True

    def _fill(self, model: nn.Module, cache: Any, batch: int, dtype: torch.dtype) -> Any:
        encdec = self.submodules == 2
        if cache is None:
            cache = (EncoderDecoderCache(DynamicCache(config=model.config), DynamicCache(config=model.config))
                     if encdec else DynamicCache(config=model.config))
        target = cache.self_attention_cache if encdec else cache
        if not isinstance(target, DynamicCache):
            raise HfxError(f"prefix_tuning needs a DynamicCache, got {type(target).__name__}; do not pass a static "
                           "cache (generate(..., cache_implementation='static')) to a prefix-tuned model")
        for i, (k, v) in enumerate(layer_states(self.encoder(), batch, self.num_layers, self.heads,
                                                self.submodules, dtype)):
            target.update(k, v, i)
        return cache

    def __call__(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        """The forward pre-hook (``register_forward_pre_hook(..., with_kwargs=True)``): the call's new (args, kwargs).

        With ``input_ids`` (B, T) (or embeddings (B, T, d); the decoder's for encoder-decoder models), fills an empty
        cache with the prefix, per layer (B, H_kv, n, head_dim), extends the (B, T) attention mask to (B, n + T) and
        moves explicit position ids by ``n``, as peft 0.21.2's ``PeftModelForCausalLM.forward`` does. Disabled: the
        inputs unchanged.

        Raises:
            HfxError: gradient checkpointing while training, neither ids nor embeddings to size the prefix, a cache
                that is not a ``DynamicCache``, prefix + sequence longer than the model's sliding window, or a mask
                of another length (:func:`extend_mask`).
        """
        if not self.enabled:
            return args, kwargs
        if model.training and torch.is_grad_enabled() and any(
                getattr(m, "gradient_checkpointing", False) for m in model.modules()):
            raise HfxError("prefix_tuning does not work with gradient checkpointing: transformers replays checkpointed "
                           "layers without the KV cache that holds the prefix; call "
                           "model.gradient_checkpointing_disable()")
        kw = bind_inputs(model, args, kwargs)
        cache = kw.pop("cache", None)
        legacy = kw.pop("past_key_values", None)
        cache = legacy if cache is None else cache
        encdec = self.submodules == 2
        ids, embeds = ("decoder_input_ids", "decoder_inputs_embeds") if encdec else ("input_ids", "inputs_embeds")
        ref = kw.get(ids) if kw.get(ids) is not None else kw.get(embeds)
        if ref is None and encdec and kw.get("labels") is not None:
            ref = kw["labels"]  # the decoder input is the shifted labels
        if ref is None:
            raise HfxError(f"prefix_tuning needs {ids} or {embeds} to size the prefix")
        batch, length = ref.shape[:2]
        held = cache.self_attention_cache if encdec and cache is not None else cache
        if held is None or held.get_seq_length() == 0:
            cache = self._fill(model, cache, batch, getattr(model, "dtype", torch.float32))
            held = cache.self_attention_cache if encdec else cache
        total = held.get_seq_length() + length  # prefix + earlier tokens + this call's
        if self.window is not None and total > self.window:
            raise HfxError(f"prefix_tuning on {type(model).__name__}: {self.n} virtual tokens + {total - self.n} "
                           f"tokens = {total} positions exceed the sliding window of {self.window}, which would drop "
                           f"the prefix for the later tokens; keep prompt + generated tokens within "
                           f"{self.window - self.n} (truncate the input or lower max_new_tokens)")
        mask_key = "decoder_attention_mask" if encdec else "attention_mask"
        kw[mask_key] = extend_mask(kw.get(mask_key), self.n, total, mask_key)
        pos_key = "decoder_position_ids" if encdec else "position_ids"
        if kw.get(pos_key) is not None:
            kw[pos_key] = kw[pos_key] + self.n
        kw[cache_argument(model)] = cache
        return (), kw
