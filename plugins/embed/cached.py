"""Cached multiple-negatives ranking loss: large in-batch-negative batches in the memory of small ones.

GradCache (Gao et al. 2021, https://arxiv.org/abs/2101.06983). MNRL gets better with more in-batch
negatives, but a plain step keeps the activations of every text of the batch for the backward pass.
The loss itself only needs the embeddings, so the step is split in three:

1. embed every column in mini-batches *without* gradients (activations of one mini-batch at a time),
   remembering the random-number state before each mini-batch;
2. compute the MNRL loss on the detached embeddings (B, H) and its gradient with respect to them
   (the "cache": B x H numbers per column);
3. on ``backward()``, re-embed each mini-batch *with* gradients, replaying its random state so dropout
   draws the same masks as in step 1, and backpropagate the cached gradient through it.

The parameter gradients equal plain MNRL's (the chain rule, split at the embeddings), up to rounding;
the cost is a second forward pass. The returned loss is a leaf whose backward hook runs step 3, so
``loss.backward()`` (or accelerate's ``backward``) works as for any loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hfx.errors import HfxError
from hfx_plugins.embed.losses import mnrl_loss

__all__ = ["CachedMNRL"]

Features = dict[str, torch.Tensor]


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """CPU and (if any) CUDA random states: dropout draws from the generator of the model's device."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def _split(features: Features, size: int) -> list[Features]:
    """Cut a tokenized column (B, T) into mini-batches of ``size`` rows."""
    n = features["input_ids"].shape[0]
    return [{k: v[i:i + size] for k, v in features.items()} for i in range(0, n, size)]


class CachedMNRL:
    """MNRL with gradient caching.

    Args:
        embed: ``embed(input_ids=..., attention_mask=...) -> (b, H)``, e.g. an :class:`Embedder`.
        scale: Logit scale (1 / temperature).
        mini_batch_size: Texts per forward pass; memory grows with this, not with the batch.

    Raises:
        HfxError: ``mini_batch_size`` < 1 (and, when called, fewer than two columns).
    """

    def __init__(self, embed: Callable[..., torch.Tensor], scale: float = 20.0, mini_batch_size: int = 8) -> None:
        if mini_batch_size < 1:
            raise HfxError(f"mini_batch_size must be at least 1, got {mini_batch_size}")
        self.embed, self.scale, self.mini_batch_size = embed, scale, mini_batch_size

    def __call__(self, columns: list[Features]) -> torch.Tensor:
        """Loss of (anchors, positives, *negatives) tokenized columns; call ``.backward()`` on it as usual."""
        if len(columns) < 2:
            raise HfxError("cached MNRL needs at least an anchor and a positive column")
        pieces = [_split(col, self.mini_batch_size) for col in columns]
        # 1. embeddings without gradients, and the RNG state before each mini-batch
        states: list[list[tuple[torch.Tensor, list[torch.Tensor]]]] = []
        reps: list[list[torch.Tensor]] = []
        with torch.no_grad():
            for col in pieces:
                states.append([])
                reps.append([])
                for mb in col:
                    states[-1].append(_rng_state())
                    reps[-1].append(self.embed(**mb))  # (b, H)
        # 2. the loss on detached embeddings, and its gradient with respect to them
        leaves = [torch.cat(col).detach().requires_grad_() for col in reps]  # each (B, H)
        with torch.enable_grad():
            loss = mnrl_loss(leaves[0], leaves[1], leaves[2:], self.scale)
            grads = torch.autograd.grad(loss, leaves)  # each (B, H)
        out = loss.detach().requires_grad_()

        def replay(upstream: torch.Tensor) -> None:
            # 3. re-embed with gradients; d(out)/d(params) = sum over mini-batches of (dL/d emb) . (d emb/d params)
            for col, col_states, grad in zip(pieces, states, grads, strict=True):
                offset = 0
                for mb, (cpu_state, cuda_states) in zip(col, col_states, strict=True):
                    # fork_rng: the caller's generators continue as after step 1
                    # enable_grad: autograd runs hooks with gradients off
                    with torch.random.fork_rng(devices=range(len(cuda_states))), torch.enable_grad():
                        torch.set_rng_state(cpu_state)
                        if cuda_states:
                            torch.cuda.set_rng_state_all(cuda_states)
                        emb = self.embed(**mb)  # (b, H)
                    b = emb.shape[0]
                    torch.autograd.backward(emb, grad[offset:offset + b] * upstream)
                    offset += b

        out.register_hook(replay)
        return out
