"""Train only the top of a reward model on the cached output of its frozen bottom.

With ``trainable_layers = N`` the embeddings and every block below the last N are frozen: their output for
a text never changes during training. Computing it once per training text and running only the N top
blocks, the final norm and the head at each step gives the same scores and gradients as the full forward
(the frozen blocks run without dropout, which smollm2 and most current decoders do not use anyway) at a
fraction of the cost: each epoch after the first costs N of L blocks instead of L. The idea is the one
behind feature extraction for linear probes, applied to the last blocks.

How the top blocks are run without the bottom ones: the backbone's block list is swapped, for the call,
for its last N blocks, and the cached states go in as ``inputs_embeds``. That is exact for decoders whose
forward passes ``inputs_embeds`` straight to the first block (Llama, Mistral, Qwen2, SmolLM2), and not
for those that add position embeddings or scale them (GPT-2, Gemma, BERT). :func:`exact_on` checks it on
real data before a run relies on it; where it fails, training uses the full forward.

Texts are padded on the right for both the capture and the tail: under a causal mask a real token's state
then does not depend on how much padding follows, so a text's cached states fit any batch it lands in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from hfx.pooling import gather_last
from hfx_plugins.reward.apply import BLOCK_LIST_NAME
from hfx_plugins.reward.head import RewardModel
from hfx_plugins.reward.scoring import pad_batch

__all__ = ["FrozenCache", "block_list", "exact_on", "first_trainable_block"]


def block_list(backbone: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The attribute path and the ``ModuleList`` of a backbone's numbered transformer blocks (e.g. ``layers``)."""
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and re.search(BLOCK_LIST_NAME + "$", name):
            return name, module
    return None


def first_trainable_block(model: RewardModel) -> int | None:
    """Index of the lowest block with a trainable weight, when everything below it (embeddings too) is frozen.

    None when there is nothing to cache: every weight trains, the model is an encoder, or no block list exists.
    """
    if model.family != "decoder":
        return None
    found = block_list(model.backbone)
    if found is None:
        return None
    name, blocks = found
    trainable = [i for i, b in enumerate(blocks) if any(p.requires_grad for p in b.parameters())]
    if not trainable or trainable[0] == 0:
        return None
    first = trainable[0]
    # Nothing below the first trainable block may train: the lower blocks, and every weight outside the block
    # list but the final norm (the embeddings).
    lower = [p for b in list(blocks)[:first] for p in b.parameters()]
    outside = [p for n, p in model.backbone.named_parameters() if not n.startswith(f"{name}.") and "norm" not in n]
    if any(p.requires_grad for p in lower + outside):
        return None
    return first


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the wanted states are in hand."""


@contextmanager
def _tail_only(backbone: nn.Module, first: int) -> Iterator[None]:
    """Within the block, ``backbone``'s block list holds only its blocks from ``first`` on."""
    found = block_list(backbone)
    assert found is not None
    name, blocks = found
    parent = backbone.get_submodule(name.rpartition(".")[0]) if "." in name else backbone
    attr = name.rpartition(".")[2]
    setattr(parent, attr, nn.ModuleList(list(blocks)[first:]))
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


@torch.no_grad()
def capture(model: RewardModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int) -> torch.Tensor:
    """The hidden states (B, T, H) that enter block ``first`` for right-padded (B, T) ids: the frozen bottom's output."""
    found = block_list(model.backbone)
    assert found is not None
    held: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        held.append(args[0] if args else kwargs["hidden_states"])
        raise _Captured

    handle = found[1][first].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return held[0].detach()


def tail_scores(model: RewardModel, hidden: torch.Tensor, attention_mask: torch.Tensor, first: int) -> torch.Tensor:
    """Scores (B,) from the frozen bottom's states (B, T, H): blocks ``first``.., the final norm and the head."""
    with _tail_only(model.backbone, first):
        out = model.backbone(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False)
    return model.score(gather_last(out.last_hidden_state, attention_mask))[:, 0] + model.shift  # (B, H) -> (B,)


@torch.no_grad()
def exact_on(model: RewardModel, ids: Sequence[Sequence[int]], first: int, pad_id: int | None,
             atol: float = 1e-4) -> bool:
    """Whether the cached path gives the full forward's scores (within ``atol``) on these texts' ids."""
    was = model.training
    model.eval()
    batch = pad_batch(ids, pad_id, "right")
    full = model(**batch).logits[:, 0]
    cached = tail_scores(model, capture(model, batch["input_ids"], batch["attention_mask"], first),
                         batch["attention_mask"], first)
    model.train(was)
    return bool(torch.allclose(full, cached, atol=atol, rtol=0.0))


class FrozenCache:
    """Each training text's frozen-bottom states, computed once; batches of them for :func:`tail_scores`.

    Args:
        model: The reward model, with its blocks below ``first`` frozen (:func:`first_trainable_block`).
        first: Index of the lowest trainable block.
        pad_id: The tokenizer's pad id (any id works: padded positions are masked).
        batch_size: Texts per capture forward pass.
    """

    def __init__(self, model: RewardModel, first: int, pad_id: int | None, batch_size: int = 32) -> None:
        self.model, self.first, self.pad_id, self.batch_size = model, first, pad_id, batch_size
        self.states: dict[tuple[int, ...], torch.Tensor] = {}  # token ids -> (T_i, H), real tokens only

    def fill(self, texts: Sequence[Sequence[int]]) -> int:
        """Capture the states of every text not cached yet, longest first (less padding); return the bytes held."""
        todo = sorted({tuple(t) for t in texts} - self.states.keys(), key=len, reverse=True)
        was = self.model.training
        self.model.eval()
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            batch = pad_batch(chunk, self.pad_id, "right")
            hidden = capture(self.model, batch["input_ids"], batch["attention_mask"], self.first)  # (B, T, H)
            for i, t in enumerate(chunk):
                self.states[t] = hidden[i, : len(t)].clone()
        self.model.train(was)
        return sum(s.numel() * s.element_size() for s in self.states.values())

    def batch(self, texts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded cached states (B, T, H) and their attention mask (B, T) for these texts' ids."""
        rows = [self.states[tuple(t)] for t in texts]
        width = max(r.size(0) for r in rows)
        hidden = rows[0].new_zeros(len(rows), width, rows[0].size(1))
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            hidden[i, : r.size(0)] = r
            mask[i, : r.size(0)] = 1
        device = next(self.model.parameters()).device  # the loop may have moved the model after the cache filled
        return hidden.to(device), mask.to(device)

    def scores(self, texts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores (B,) of these texts through the trainable top (with gradients when the model trains)."""
        hidden, mask = self.batch(texts)
        return tail_scores(self.model, hidden, mask, self.first)
