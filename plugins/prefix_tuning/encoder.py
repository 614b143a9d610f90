"""The prefix encoder: the trained parameters of prefix tuning and the flat prefix they produce.

Follows peft 0.21.2's ``PrefixEncoder`` (``peft/tuners/prefix_tuning/model.py``), itself from P-tuning v2
(https://github.com/THUDM/P-tuning-v2): without projection the prefix is an ``Embedding(n, L * 2 * d)``; with
projection (Li & Liang 2021, §4.3) it is ``Embedding(n, d)`` -> ``Linear(d, h)`` -> ``Tanh`` -> ``Linear(h, L * 2 * d)``.
Parameters are created in peft's order, so the same seed gives the same initial prefix.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PrefixEncoder"]


class PrefixEncoder(nn.Module):
    """Produces the flat prefix ``(n, L * 2 * d)``: per virtual token, ``[L0.K, L0.V, L1.K, L1.V, ...]``.

    Args:
        num_virtual_tokens: n.
        token_dim: d, the width of one layer's keys (KV heads x head_dim).
        num_layers: L.
        encoder_hidden_size: h, the MLP's hidden width (used with ``prefix_projection``).
        prefix_projection: Reparameterise through the MLP; False stores the flat prefix directly.
        init_weights: "zero" zeroes the last MLP layer (or the flat prefix); None keeps torch's defaults.
    """

    def __init__(self, num_virtual_tokens: int, token_dim: int, num_layers: int, encoder_hidden_size: int,
                 prefix_projection: bool, init_weights: str | None = None) -> None:
        super().__init__()
        self.prefix_projection = prefix_projection
        out = num_layers * 2 * token_dim
        if prefix_projection:
            self.embedding = nn.Embedding(num_virtual_tokens, token_dim)
            self.transform = nn.Sequential(nn.Linear(token_dim, encoder_hidden_size), nn.Tanh(),
                                           nn.Linear(encoder_hidden_size, out))
            if init_weights == "zero":
                nn.init.zeros_(self.transform[-1].weight)
                nn.init.zeros_(self.transform[-1].bias)
        else:
            self.embedding = nn.Embedding(num_virtual_tokens, out)
            if init_weights == "zero":
                nn.init.zeros_(self.embedding.weight)

    def forward(self) -> torch.Tensor:
        """The flat prefix, ``(n, L * 2 * d)``."""
        weight = self.embedding.weight  # (n, d) with projection, else (n, L * 2 * d)
        return self.transform(weight) if self.prefix_projection else weight

    def resume_state(self) -> dict[str, torch.Tensor]:
        """The MLP's own parameters (empty without projection): what continuing training needs beyond the prefix.

        With projection: ``embedding.weight`` (n, d) and the two Linear layers' weights and biases,
        ((h, d), (h,), (L * 2 * d, h), (L * 2 * d,)), h = ``encoder_hidden_size``.
        """
        return {k: v for k, v in self.state_dict().items()} if self.prefix_projection else {}
