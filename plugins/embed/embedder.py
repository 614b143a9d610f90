"""The embedder: a transformer backbone, a pooling head, and ``encode(texts) -> (N, H)`` numpy array.

Why the same text gets the same vector whatever the batch (public sentence-transformers bug reports
answer "known, cannot be fixed"). Two things change a text's vector with its batch:

1. **Padding.** A padded batch runs every matmul and the attention over ``T_max`` positions instead of
   the text's own ``T``; the masked positions add exact zeros, but the kernels block the sums
   differently, so the rounding differs (measured on minilm: up to 1.7e-6 on unnormalised CLS/max
   vectors). Here every forward pass holds texts of *one* token length only (texts are bucketed by
   exact length), so there is no padding at all and each text is computed at its own length.
2. **The number of rows of a matmul.** Measured on this machine's fp32 GEMM (oneDNN/MKL, 1 or 2
   threads): a linear layer computes a row the same way for any row count of 12 or more, but takes
   other kernels for fewer than 4 rows and for small thread tails (5-11 rows), which round differently
   (up to 3e-6 on minilm's hidden states). A bucket chunk with fewer than ``MIN_TOKEN_ROWS`` token rows
   (batch x length) is therefore topped up with copies of its first text, whose outputs are dropped.

With both, a text's arithmetic no longer depends on which texts, or how many, share its batch: the
tests and ``benchmarks/embed_vs_st.py`` measure 0.0 difference across batch sizes on minilm. Texts are
processed longest bucket first (length-sorted batching, as sentence-transformers does); results come
back in input order.

Prompt learning. ``prompt_tuning`` and ``prefix_tuning`` act through forward hooks on the model ``hfx.apply`` was
given (the ``...ForCausalLM``), which a call of the bare backbone would bypass (the prompt silently dropped,
the base model's vectors returned; sentence-transformers has the same fault with peft prompt learning). On such a
model the embedder runs the whole model (its LM head on one position only) and pools the backbone's output as
computed there; the ``n`` virtual positions prompt tuning puts in front of the tokens get 0 in the pooling mask,
so every pooling mode reads real tokens only, as for T5, whose encoder carries prompt tuning's hook itself. A
prefix-tuned encoder-decoder is refused: peft's layout prefixes the decoder only, so its encoder, which is pooled,
has no prefix. A peft prompt-learning model (``get_peft_model`` with prompt tuning, prefix tuning, p-tuning) is
run through peft's wrapper the same way; a peft prompt-learning encoder-decoder is refused (peft adds the prompt
in its wrapper's forward, which a call of the encoder bypasses).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hfx.errors import HfxError
from hfx.finite import assert_finite
from hfx.models.limits import max_input_length
from hfx.models.loading import model_family
from hfx_plugins.embed.pooling import Pooling
from hfx_plugins.prompt_learning import ENCODER_ATTRS, prompt_plugins

__all__ = ["MIN_TOKEN_ROWS", "PROGRESS_FROM", "Embedder", "backbone_of"]

MIN_TOKEN_ROWS = 16
"""Smallest batch x length of a forward pass in ``encode`` (see the module docstring, point 2)."""
PROGRESS_FROM = 512
"""``encode`` shows a progress bar from this many texts on (unless told otherwise)."""


def backbone_of(model: nn.Module) -> nn.Module:
    """The part of ``model`` whose ``last_hidden_state`` is pooled: the bare transformer, or T5's encoder.

    Raises:
        HfxError: ``model`` is not a transformers model (no ``config``).
    """
    if hasattr(model, "get_base_model"):  # a peft model: the adapted transformers model inside
        model = model.get_base_model()
    config = getattr(model, "config", None)
    if config is None:
        raise HfxError(f"{type(model).__name__} is not a transformers model; give hfx.embed a model name, a folder or a PreTrainedModel")
    if getattr(config, "is_encoder_decoder", False):
        return model.get_encoder()  # sentence-T5 pools the encoder's outputs
    return getattr(model, "base_model", model)  # BertForX.bert, LlamaForCausalLM.model, or the model itself


class Embedder(nn.Module):
    """A transformer + pooling head producing one vector per text.

    Args:
        model: A transformers model (bare, with a task head, or wrapped by peft); its backbone is pooled.
        tokenizer: The model's tokenizer (needed by :meth:`encode` and :meth:`tokenize`).
        pooling: Pooling mode, see :mod:`hfx_plugins.embed.pooling`.
        normalize: L2-normalise the embeddings.
        max_length: Longest input in tokens; 0 = the tokenizer's limit (at most the model's positions).

    Raises:
        HfxError: ``model`` is not a transformers model, or ``pooling`` is unknown.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any = None, pooling: str = "mean", normalize: bool = False, max_length: int = 0
    ) -> None:
        super().__init__()
        # The model as given is kept as a plain attribute, not a submodule: its weights are the backbone's
        # (plus a head that pooling never reads), and registering both would list every weight twice in
        # state_dict and checkpoints.
        object.__setattr__(self, "model", model)
        self.backbone = backbone_of(model)
        for name in self._check_prompt():  # the trained prompt or prefix: among the embedder's parameters, moved by .to
            self.add_module(name, getattr(model, ENCODER_ATTRS[name]))
        self.pooling = Pooling(pooling, normalize)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dim(self) -> int:
        """Size of one embedding: the width of the last layer's hidden states, the config's ``hidden_size``, as
        sentence-transformers' ``Transformer.get_word_embedding_dimension`` reads it. The embedding table's
        width differs where the model projects it (ELECTRA: ``embedding_size`` 128 -> ``hidden_size`` 256), so
        it is the answer only for a config without ``hidden_size``."""
        size = getattr(self.backbone.config, "hidden_size", None)
        return int(size) if isinstance(size, int) else int(self.backbone.get_input_embeddings().embedding_dim)

    @property
    def device(self) -> torch.device:
        """The device of the embedder's parameters (where ``encode`` puts its batches)."""
        return next(self.parameters()).device

    def limit(self) -> int:
        """Token limit applied to each text: ``max_length``, else the tokenizer's, capped by what the model embeds.

        The cap is :func:`hfx.models.limits.max_input_length`: the learned position table less RoBERTa's
        ``padding_idx + 1`` offset, the config's positions and the tokenizer's limit.

        Raises:
            HfxError: no ``max_length`` is set and the embedder has no tokenizer.
        """
        tok = self.tokenizer if self.max_length else self._tok()
        return max_input_length(self.backbone, tok, self.max_length, what="embed max_length")

    def _tok(self) -> Any:
        if self.tokenizer is None:
            raise HfxError("this embedder has no tokenizer; pass tokenizer=... to hfx.embed or set embedder.tokenizer")
        return self.tokenizer

    def _check_prompt(self) -> list[str]:
        """The prompt-learning plugins of the model (see the module docstring). Refused (HfxError, one line naming
        both): a prefix-tuned encoder-decoder, and a peft prompt-learning encoder-decoder."""
        found = prompt_plugins(self.model)
        encdec = getattr(self.backbone.config, "is_encoder_decoder", False)
        if "prefix_tuning" in found and encdec:
            raise HfxError("embed cannot pool a prefix_tuning encoder-decoder: the prefix is in the decoder's "
                           "self-attention only (peft's layout), and embed pools the encoder, which has none; use "
                           "prompt_tuning, whose prompt the encoder reads")
        peft_type = self._peft_prompt()
        if peft_type and encdec:
            raise HfxError(f"embed cannot pool a peft {peft_type} encoder-decoder: peft adds the prompt in its "
                           "wrapper's forward, which embed's call of the encoder bypasses; apply hfx's prompt_tuning "
                           "(its hook is on the encoder) or embed the base model")
        return found

    def _peft_prompt(self) -> str | None:
        """The peft type of a peft prompt-learning model (PROMPT_TUNING, PREFIX_TUNING, P_TUNING, ...), else None."""
        cfg = getattr(self.model, "active_peft_config", None)
        return str(getattr(cfg.peft_type, "value", cfg.peft_type)) if getattr(cfg, "is_prompt_learning", False) else None

    def _decoder_positions(self, attention_mask: torch.Tensor, extra: dict[str, Any]) -> dict[str, Any]:
        """``extra`` with a decoder's ``position_ids`` (B, T) counted from the mask, as transformers' ``generate`` does.

        A decoder with absolute positions (GPT-2, GPT-BigCode) otherwise numbers a left-padded row's tokens from
        the first pad, so the row embeds differently from the same row alone. Encoders keep their own rule
        (RoBERTa derives positions from the pad id, with an offset), as sentence-transformers passes no positions.
        """
        if ("position_ids" in extra or model_family(self.backbone.config) != "decoder"
                or "position_ids" not in inspect.signature(self.backbone.forward).parameters):
            return extra
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T); pads get 0 (never attended)
        return {**extra, "position_ids": positions}

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: Any) -> torch.Tensor:
        """The backbone's last hidden state (B, T', H): T' = T, or n + T with prompt tuning's virtual tokens."""
        hooked = bool(self._check_prompt()) or self._peft_prompt() is not None
        if not hooked or self.backbone is self.model or getattr(self.backbone.config, "is_encoder_decoder", False):
            extra = self._decoder_positions(attention_mask, extra)
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        # The plugins' hooks sit on the whole model: run it, and keep what its backbone returned inside it.
        seen: list[torch.Tensor] = []
        handle = self.backbone.register_forward_hook(lambda m, a, out: seen.append(out.last_hidden_state))
        try:
            keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
            self.model(input_ids=input_ids, attention_mask=attention_mask, **keep, **extra)
        finally:
            handle.remove()
        return seen[-1]  # (B, n + T, H) with prompt tuning, (B, T, H) with prefix tuning

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: Any) -> torch.Tensor:
        """Embed a tokenized batch: ids and mask (B, T) -> (B, H). Padding on either side is ignored, and so are
        the virtual tokens of prompt tuning (module docstring)."""
        hidden = self._hidden(input_ids, attention_mask, **extra)  # (B, T', H)
        extra_positions = hidden.shape[1] - attention_mask.shape[1]
        if extra_positions > 0:  # prompt tuning's virtual tokens, in front: 0 in the mask, never pooled
            attention_mask = torch.cat([attention_mask.new_zeros(attention_mask.shape[0], extra_positions),
                                        attention_mask], dim=1)  # (B, n + T)
        return self.pooling(hidden, attention_mask)  # (B, H)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad and truncate ``texts`` into a training batch: input_ids and attention_mask, (B, T).

        Raises:
            HfxError: the embedder has no tokenizer.
        """
        enc = self._tok()(list(texts), padding=True, truncation=True, max_length=self.limit(), return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to :meth:`limit`; one notice for all the texts that were cut."""
        tok, limit = self._tok(), self.limit()
        # Tokenize with one token to spare: a text that still fills limit + 1 tokens was too long.
        ids = tok(texts, truncation=True, max_length=limit + 1)["input_ids"]
        long = [i for i, row in enumerate(ids) if len(row) > limit]
        if long:
            cut = tok([texts[i] for i in long], truncation=True, max_length=limit)["input_ids"]
            for i, row in zip(long, cut, strict=True):
                ids[i] = row
            warnings.warn(
                f"{len(long)} of {len(texts)} texts are longer than {limit} tokens and were truncated "
                f"(the first is text {long[0]}); raise max_length if the model allows it", UserWarning, stacklevel=3,
            )
        return ids

    def encode(
        self, texts: str | Sequence[str], batch_size: int = 32, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed ``texts`` -> float32 array (N, H) in input order; a single string gives (H,).

        ``batch_size`` bounds the texts per forward pass and does not change any vector (module docstring).
        An empty list gives an array of shape (0, H); a text with no tokens at all (an empty string for a
        tokenizer that adds no special tokens) gives a zero vector, as mean pooling over nothing does.

        Raises:
            HfxError: an item of ``texts`` is not a string, ``batch_size`` < 1, the embedder has no tokenizer, or a
                vector holds NaN/inf (naming the first such text).
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise HfxError(f"texts[{i}] is a {type(t).__name__}, not a string; encode takes a list of strings")
        if batch_size < 1:
            raise HfxError(f"batch_size must be at least 1, got {batch_size}")
        out = np.zeros((len(items), self.dim), dtype=np.float32)  # (N, H)
        if not items:
            return out
        ids = self._token_ids(items)
        buckets: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            buckets.setdefault(len(row), []).append(i)
        show = len(items) >= PROGRESS_FROM if show_progress is None else show_progress
        was_training, device = self.training, self.device
        self.eval()
        try:
            with torch.inference_mode(), tqdm(total=len(items), desc="encode", disable=not show, leave=False) as bar:
                for length in sorted(buckets, reverse=True):  # longest first
                    idx = buckets[length]
                    for start in range(0, len(idx), batch_size):
                        chunk = idx[start:start + batch_size]
                        bar.update(len(chunk))
                        if length == 0:
                            continue  # stays a zero vector
                        rows = torch.tensor([ids[i] for i in chunk], dtype=torch.long)  # (b, T)
                        need = -(-MIN_TOKEN_ROWS // length)  # rows that make b x T >= MIN_TOKEN_ROWS
                        if len(chunk) < need:
                            rows = torch.cat([rows, rows[:1].expand(need - len(chunk), length)])  # (need, T)
                        rows = rows.to(device)
                        emb = self(rows, torch.ones_like(rows))[: len(chunk)]  # (b, H); no padding anywhere
                        out[chunk] = emb.float().cpu().numpy()
        finally:
            self.train(was_training)
        # A NaN vector would rank every other row wrongly in an index or a similarity matrix: name the text.
        assert_finite(out, "embeddings", rows=items, hint="the model's weights or this input overflow; check the "
                      "weights (hfx.finite.assert_finite_weights) or run in float32")
        return out[0] if single else out
