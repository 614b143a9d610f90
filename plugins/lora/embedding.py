"""LoRA on ``nn.Embedding``: the update to the (vocab, dim) table is (B @ A).T, looked up row by row.

For token ids x (...)::

    y = E[x] + s * A.T[x] @ B.T         A: (r, vocab), B: (dim, r)

Unlike a Linear layer, A starts at zero and B is Gaussian (Microsoft's loralib, and peft): the lookup A.T[x]
is then zero and the update starts at zero, while gradients still reach A. peft keeps A and B as bare
parameters, so their keys have no ``.weight``: ``lora_embedding_A.<adapter>``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hfx_plugins.lora.layer import LoraLayer

__all__ = ["LoraEmbedding"]


class LoraEmbedding(LoraLayer):
    """LoRA on a token embedding table (no dropout: peft applies none to embeddings either)."""

    adapter_param_names = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer, base_layer.num_embeddings, base_layer.embedding_dim)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def add_adapter(self, name: str, r: int, lora_alpha: float, scaling: float, dropout: float,
                    init: bool | str, use_dora: bool) -> None:
        del dropout, use_dora  # not used by embeddings (use_dora is refused at injection)
        self._register(name, r, lora_alpha, scaling)
        base = self.base_layer.weight
        dtype = base.dtype if base.dtype in (torch.float32, torch.float64) else torch.float32
        # peft draws A and B with randn before its init zeroes A and redraws B: the same draws, the same B.
        A = torch.randn(r, self.in_features)  # (r, vocab)
        B = torch.randn(self.out_features, r)  # (dim, r)
        if init:  # True and "gaussian" alike, as in peft
            nn.init.zeros_(A)
            nn.init.normal_(B)
        self.lora_embedding_A[name] = nn.Parameter(A.to(base.device, dtype))
        self.lora_embedding_B[name] = nn.Parameter(B.to(base.device, dtype))

    def delta_weight(self, name: str) -> torch.Tensor:
        """s * (B @ A).T: (vocab, dim), the layout of the embedding table."""
        return (self.lora_embedding_B[name] @ self.lora_embedding_A[name]).t() * self.scaling[name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)  # (..., dim)
        if self.disabled:
            return result
        base = self.base_layer
        # Scaled embeddings (e.g. Gemma's) multiply inside forward; the update must be scaled alike.
        embed_scale = getattr(base, "embed_scale", None)
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue
            A, B = self.lora_embedding_A[name], self.lora_embedding_B[name]
            # padding_idx etc. as the base lookup: the padding row of A gets no gradient
            after_a = F.embedding(x, A.t(), padding_idx=base.padding_idx, max_norm=base.max_norm,
                                  norm_type=base.norm_type, scale_grad_by_freq=base.scale_grad_by_freq,
                                  sparse=base.sparse)  # (..., r)
            update = (after_a @ B.t()) * self.scaling[name]  # (..., dim)
            if embed_scale is not None:
                update = update * (embed_scale.to(update.dtype) if torch.is_tensor(embed_scale) else embed_scale)
            result = result + update.to(result.dtype)
        return result

    def extra_repr(self) -> str:
        return f"vocab={self.in_features}, dim={self.out_features}, adapters={self.r}"
