"""LoRA on ``nn.Embedding``: the update to the (vocab, dim) table is (B @ A).T, looked up row by row.

For token ids x (...)::

    y = E[x] + s * A.T[x] @ B.T         A: (r, vocab), B: (dim, r)

Unlike a Linear layer, A starts at zero and B is Gaussian (Microsoft's loralib, and peft): the lookup A.T[x]
is then zero and the update starts at zero, while gradients still reach A. peft keeps A and B as bare
parameters, so their keys have no ``.weight``: ``lora_embedding_A.<adapter>``.

DoRA on an embedding follows peft: the norm is taken over the vocabulary for each embedding dimension,
n = ||E + s (B A).T||_col (dim,), and y = m / n * (E[x] + s A.T[x] B.T) with n detached.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hfx_plugins.lora.layer import DoraMagnitude, LoraLayer

__all__ = ["LoraEmbedding"]


class LoraEmbedding(LoraLayer):
    """LoRA on a token embedding table (no dropout: peft applies none to embeddings either)."""

    adapter_param_names = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer, base_layer.num_embeddings, base_layer.embedding_dim)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()
        self.lora_magnitude_vector = nn.ModuleDict()
        self._dora_norms: dict[str, torch.Tensor] = {}  # column norms used when merging, needed to unmerge

    def add_adapter(self, name: str, r: int, lora_alpha: float, scaling: float, dropout: float,
                    init: bool | str, use_dora: bool) -> None:
        """Add adapter ``name``: A (r, vocab) zeros and B (dim, r) normal, as peft's ``lora.Embedding``.

        Embeddings take no dropout (``dropout`` is ignored, as in peft). Both are drawn with ``randn`` first,
        as peft does, so one seed gives peft's B; ``use_dora`` adds the magnitude per embedding dimension.

        Raises:
            HfxError: this layer already has an adapter called ``name``.
        """
        del dropout  # peft applies no dropout to embeddings
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
        if use_dora:
            with torch.no_grad():
                self.lora_magnitude_vector[name] = DoraMagnitude(self._col_norm(base.to(dtype), name))

    def _col_norm(self, table: torch.Tensor, name: str) -> torch.Tensor:
        """||E + s (B A).T|| over the vocabulary, for each embedding dimension: (dim,)."""
        return torch.linalg.norm(table + self.delta_weight(name), dim=0)

    def delta_weight(self, name: str) -> torch.Tensor:
        """s * (B @ A).T: (vocab, dim), the layout of the embedding table."""
        return (self.lora_embedding_B[name] @ self.lora_embedding_A[name]).t() * self.scaling[name]

    def _merge_one(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            return super()._merge_one(name, weight)
        w0 = weight  # DoRA: the norm of the weight without merged adapters, as forward takes it
        for done in reversed(self.merged_adapters):
            w0 = self._unmerge_one(done, w0)
        self._dora_norms[name] = self._col_norm(w0, name)
        factor = self.lora_magnitude_vector[name].weight / self._dora_norms[name]  # (dim,)
        return factor.view(1, -1) * (weight + self.delta_weight(name).to(weight.dtype))

    def _unmerge_one(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name not in self.lora_magnitude_vector:
            return super()._unmerge_one(name, weight)
        factor = self.lora_magnitude_vector[name].weight / self._dora_norms[name]  # (dim,)
        return weight / factor.view(1, -1) - self.delta_weight(name).to(weight.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The base lookup E[x] plus s * (B A)^T[x] for each active, unmerged adapter (peft's
        ``lora.Embedding``).

        A^T is looked up with the base table's ``padding_idx``, ``max_norm`` and other options, so the padding
        row gets no gradient; a scaled embedding (``embed_scale``, Gemma's) scales the update alike; DoRA
        rescales each embedding dimension by m / ||E + s (B A)^T|| over the vocabulary (norm detached, DoRA
        section 4.3).

        Args:
            x: (...) token ids (long); ``args``/``kwargs`` go to the base embedding unchanged.

        Returns:
            (..., dim) embeddings in the base table's dtype.
        """
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
            if name in self.lora_magnitude_vector:
                with torch.no_grad():  # detached, as for Linear layers (DoRA section 4.3)
                    norm = self._col_norm(base.weight.to(A.dtype), name)  # (dim,)
                scale = self.lora_magnitude_vector[name].weight / norm  # (dim,)
                result, update = result * scale.to(result.dtype), update * scale
            if embed_scale is not None:
                update = update * (embed_scale.to(update.dtype) if torch.is_tensor(embed_scale) else embed_scale)
            result = result + update.to(result.dtype)
        return result

    def extra_repr(self) -> str:
        """Vocabulary size, embedding dimension and the adapters' ranks, shown by ``print(model)``."""
        return f"vocab={self.in_features}, dim={self.out_features}, adapters={self.r}"
