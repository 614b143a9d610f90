"""The trained virtual-token embeddings of prompt tuning and their three initialisations.

Follows peft 0.21.2's ``PromptEmbedding`` (``peft/tuners/prompt_tuning/model.py``; Lester et al. 2021, §3):
``Embedding(n * s, d)`` with ``s = num_transformer_submodules``; RANDOM keeps ``nn.Embedding``'s N(0, 1), SAMPLE_VOCAB
takes the embeddings of ``randint(0, vocab, (n * s,))`` token ids, TEXT those of the init text's tokens (special
tokens included, as ``tokenizer(text)["input_ids"]`` gives them) cut or repeated to ``n * s``. Random draws happen
in peft's order, so one seed gives the same prompt in both libraries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hfx.errors import HfxError

__all__ = ["PromptEmbedding", "load_tokenizer"]


def load_tokenizer(name_or_path: str, kwargs: dict[str, Any] | None) -> Any:
    """The init text's tokenizer: an offline model name (``smollm2-135m``) or a folder; no remote code.

    Raises:
        HfxError: the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    from hfx.models.zoo import OFFLINE_MODELS, resolve_model

    kwargs = {k: v for k, v in (kwargs or {}).items() if k != "trust_remote_code"}  # peft drops it too
    path = resolve_model(name_or_path) if name_or_path in OFFLINE_MODELS else name_or_path
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise HfxError(f"cannot load the tokenizer {name_or_path!r} for prompt_tuning_init=TEXT ({err}); give a local "
                       "folder or an offline model name, or pass tokenizer=... to hfx.apply") from err


class PromptEmbedding(nn.Module):
    """``(n * s, d)`` trained embeddings; ``forward()`` returns them all.

    Args:
        total_virtual_tokens: n * s.
        token_dim: d, the model's embedding width.
        init: RANDOM, SAMPLE_VOCAB or TEXT.
        word_embeddings: The model's input embedding (SAMPLE_VOCAB, TEXT).
        init_token_ids: TEXT: the init text's token ids.
    """

    def __init__(self, total_virtual_tokens: int, token_dim: int, init: str = "RANDOM",
                 word_embeddings: nn.Embedding | None = None, init_token_ids: list[int] | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(total_virtual_tokens, token_dim)  # N(0, 1), also drawn when overwritten (as peft)
        if init == "RANDOM":
            return
        if word_embeddings is None:
            raise HfxError(f"prompt_tuning_init={init} needs the model's input embeddings")
        if init == "SAMPLE_VOCAB":
            ids = torch.randint(0, word_embeddings.num_embeddings, (total_virtual_tokens,), dtype=torch.long)
        else:
            if not init_token_ids:
                raise HfxError("prompt_tuning_init_text gives no tokens; use a non-empty text")
            reps = math.ceil(total_virtual_tokens / len(init_token_ids))
            ids = torch.tensor((list(init_token_ids) * reps)[:total_virtual_tokens], dtype=torch.long)
        with torch.no_grad():
            weight = word_embeddings(ids.to(word_embeddings.weight.device)).detach().clone().float()  # (n * s, d)
        self.embedding.weight = nn.Parameter(weight)

    def forward(self) -> torch.Tensor:
        """The virtual-token embeddings, ``(n * s, d)``."""
        return self.embedding.weight
