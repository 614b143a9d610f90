"""How the virtual tokens reach the model: forward hooks that prepend them to the input embeddings.

The model stays a transformers model; the hooks do what peft 0.21.2's ``PeftModelForCausalLM.forward`` and
``PeftModelForSeq2SeqLM.forward`` / ``generate`` do for prompt tuning (``peft/peft_model.py``), on every call:

- decoder models: when the cache is empty or absent (a plain forward, or the first step of ``generate()``), the
  ``(B, n, d)`` prompt goes in front of ``inputs_embeds``, the 2-D mask gets ``n`` ones in front and the labels
  ``n`` ignored (-100) positions; later ``generate()`` steps find the prompt in the cache and only get the mask
  extended. Explicit position ids become ``arange(n)`` then ``position_ids + n`` (peft drops them with a warning;
  with no padding the two agree). Unlike peft, the returned ``logits`` drop the ``n`` virtual positions, so they
  line up with ``input_ids`` (``(B, T, V)``; with ``logits_to_keep``, as ``generate()`` sets it, the kept last
  positions are real tokens and nothing is dropped) and code that scores continuations works unchanged; the loss is
  computed on the full sequence first, as peft does.
- encoder-decoder models: the encoder's inputs get the first ``n`` prompt rows (peft stores ``2n`` rows and uses
  those), through a hook on the encoder itself, so that ``generate()`` (which calls the encoder directly) sees
  them too; the attention mask the decoder's cross-attention reads is extended to match.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hfx.data.collate import IGNORE_INDEX
from hfx.errors import HfxError
from hfx_plugins.prompt_learning import bind_inputs, drop_virtual, extend_mask
from hfx_plugins.prompt_tuning.encoder import PromptEmbedding

__all__ = ["PromptInjector"]


def _cache_length(kw: dict[str, Any]) -> int:
    cache = kw.get("cache") if kw.get("cache") is not None else kw.get("past_key_values")
    if cache is None:
        return 0
    if isinstance(cache, (tuple, list)):  # legacy tuples: ((k, v), ...) with k (B, H, S, hd)
        return int(cache[0][0].shape[-2]) if len(cache) else 0
    return int(cache.get_seq_length())


class PromptInjector:
    """The forward hooks that prepend the prompt (see module docstring); ``enabled`` switches them off."""

    def __init__(self, encoder: PromptEmbedding, num_virtual_tokens: int, word_embeddings: nn.Module) -> None:
        self.encoder, self.n, self.word_embeddings = encoder, num_virtual_tokens, word_embeddings
        self.enabled = True
        self._injected = self._strip_logits = False

    def _embeds(self, kw: dict[str, Any]) -> torch.Tensor:
        embeds = kw.pop("inputs_embeds", None)
        ids = kw.pop("input_ids", None)
        if embeds is None:
            if ids is None:
                raise HfxError("prompt_tuning needs input_ids or inputs_embeds")
            embeds = self.word_embeddings(ids)  # (B, T, d)
        prompt = self.encoder()[: self.n].to(embeds.dtype)  # (n, d)
        return torch.cat([prompt.unsqueeze(0).expand(embeds.shape[0], -1, -1), embeds], dim=1)  # (B, n + T, d)

    def decoder_hook(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        """Pre-hook of a decoder model: prompt in front of the embeddings on the first step, masks and labels."""
        self._injected = False
        if not self.enabled:
            return args, kwargs
        kw = bind_inputs(model, args, kwargs)
        past = _cache_length(kw)
        pos = kw.get("position_ids")
        if past:
            ref = kw.get("input_ids") if kw.get("input_ids") is not None else kw.get("inputs_embeds")
            kw["attention_mask"] = extend_mask(kw.get("attention_mask"), self.n, past + ref.shape[1], "attention_mask")
            if pos is not None:
                kw["position_ids"] = pos + self.n
            return (), kw
        embeds = self._embeds(kw)
        batch, length = embeds.shape[0], embeds.shape[1] - self.n
        kw["inputs_embeds"] = embeds
        kw["attention_mask"] = extend_mask(kw.get("attention_mask"), self.n, self.n + length, "attention_mask")
        if kw.get("labels") is not None:
            labels = kw["labels"]
            kw["labels"] = torch.cat([labels.new_full((batch, self.n), IGNORE_INDEX), labels], dim=1)  # (B, n + T)
        if pos is not None:
            head = torch.arange(self.n, device=pos.device, dtype=pos.dtype).expand(*pos.shape[:-1], self.n)
            kw["position_ids"] = torch.cat([head, pos + self.n], dim=-1)
        keep = kw.get("logits_to_keep", 0)  # generate() asks for the last position only: no logits to drop
        self._strip_logits = not (isinstance(keep, int) and keep > 0) and not isinstance(keep, torch.Tensor)
        self._injected = True  # the hidden states hold the n virtual positions whatever logits_to_keep is
        return (), kw

    def strip_hook(self, model: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        """Post-hook of a decoder model: drop the virtual positions from ``logits`` (``(B, n + T, V)`` -> ``(B, T, V)``)
        and from every ``hidden_states`` entry (``(B, n + T, H)`` -> ``(B, T, H)``: a value head reads real tokens)."""
        if self._injected:
            drop_virtual(output, self.n, self._strip_logits)
        self._injected = False
        return output

    def seq2seq_hook(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        """Pre-hook of an encoder-decoder model: the mask the encoder and the cross-attention read covers the prompt."""
        if not self.enabled:
            return args, kwargs
        kw = bind_inputs(model, args, kwargs)
        enc = kw.get("encoder_outputs")
        if enc is not None:
            length = (enc[0] if isinstance(enc, (tuple, list)) else enc.last_hidden_state).shape[1]  # n + T
        else:
            ref = kw.get("input_ids") if kw.get("input_ids") is not None else kw.get("inputs_embeds")
            if ref is None:
                raise HfxError("prompt_tuning needs input_ids, inputs_embeds or encoder_outputs")
            length = self.n + ref.shape[1]
        kw["attention_mask"] = extend_mask(kw.get("attention_mask"), self.n, length, "attention_mask")
        return (), kw

    def encoder_hook(self, encoder: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        """Pre-hook of the encoder of an encoder-decoder model: the prompt in front of its input embeddings."""
        if not self.enabled:
            return args, kwargs
        kw = bind_inputs(encoder, args, kwargs)
        embeds = self._embeds(kw)
        kw["inputs_embeds"] = embeds
        kw["attention_mask"] = extend_mask(kw.get("attention_mask"), self.n, embeds.shape[1], "attention_mask")
        return (), kw
