"""Preference groups as model batches, the batch loss, and held-out evaluation.

A batch holds B groups (prompts); their completions are stacked into one (N, T) token batch, N = sum of the
groups' K, and the pairs index into it. Each group's K completions are scored once however many pairs they
form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from hfx.errors import HfxError
from hfx.metrics import mean, proportion, spearman
from hfx_plugins.reward.config import RewardConfig
from hfx_plugins.reward.data import Group
from hfx_plugins.reward.losses import preference_loss
from hfx_plugins.reward.scoring import encode_texts, pad_batch, score_texts

__all__ = ["GroupCollator", "apply_shift", "batch_loss", "encode_groups", "evaluate_groups", "shift_to_zero_mean", "split_pairs"]


def split_pairs(groups: Sequence[Group]) -> list[Group]:
    """One K = 2 group per pair (trl's pairwise training on expanded rankings)."""
    return [Group([g.texts[w], g.texts[lo]], [(0, 1)], g.margin) for g in groups for w, lo in g.pairs]


def encode_groups(groups: Sequence[Group], tokenizer: PreTrainedTokenizerBase, cfg: RewardConfig) -> list[dict[str, Any]]:
    """Token ids of every group's completions: ``{"ids": K lists, "pairs": [(w, l)], "margin": float | None}``."""
    flat = encode_texts(tokenizer, [t for g in groups for t in g.texts], cfg.max_length, cfg.append_eos)
    out, start = [], 0
    for g in groups:
        out.append({"ids": flat[start : start + len(g.texts)], "pairs": list(g.pairs), "margin": g.margin})
        start += len(g.texts)
    return out


class GroupCollator:
    """Builds ``input_ids``/``attention_mask`` (N, T) and ``winners``/``losers``/``groups`` (P,) (+ ``margin``)."""

    def __init__(self, pad_token_id: int | None, padding_side: str = "right") -> None:
        self.pad_token_id, self.padding_side = pad_token_id, padding_side

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One batch of ranking groups: every text of every group padded together, plus the ranked pairs.

        Returns ``input_ids``/``attention_mask`` (N, T) over the N texts, ``winners``/``losers`` (P,) row
        indices of each pair's texts, ``groups`` (P,) the group of each pair, ``texts`` (the unpadded ids, the
        frozen-block cache's keys) and, when any pair has one, ``margin`` (P,).
        """
        ids, winners, losers, groups, margins = [], [], [], [], []
        for g, item in enumerate(items):
            offset = len(ids)
            ids.extend(item["ids"])
            for w, lo in item["pairs"]:
                winners.append(offset + w)
                losers.append(offset + lo)
                groups.append(g)
                margins.append(item.get("margin"))
        batch: dict[str, Any] = pad_batch(ids, self.pad_token_id, self.padding_side)
        batch["texts"] = [tuple(x) for x in ids]  # the ids unpadded: the key of a cached frozen-bottom output
        batch.update(winners=torch.tensor(winners), losers=torch.tensor(losers), groups=torch.tensor(groups))
        if any(m is not None for m in margins):
            batch["margin"] = torch.tensor([0.0 if m is None else m for m in margins])  # (P,)
        return batch


def batch_loss(model: nn.Module, batch: dict[str, Any], cfg: RewardConfig, step: int | None = None,
               scorer: Callable[[dict[str, Any]], torch.Tensor] | None = None) -> torch.Tensor:
    """The configured loss of a collated batch.

    ``scorer(batch) -> (N,)`` replaces the model's forward (the frozen-bottom cache of :mod:`.frozen`).

    Raises:
        HfxError: a NaN or infinite score or loss, naming the step and the cause (before any backward pass,
            so the weights and the last checkpoint stay intact).
    """
    if scorer is not None:
        scores = scorer(batch)  # (N,)
    else:
        scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]  # (N,)
    at = f" at step {step}" if step is not None else ""
    if not bool(torch.isfinite(scores).all()):
        raise HfxError(f"reward score is {scores[~torch.isfinite(scores)][0].item()}{at} (the forward pass overflowed: "
                       "the weights hold NaN/inf or the learning rate is too high); lower the learning rate and "
                       "resume from the last checkpoint")
    loss = preference_loss(scores, batch["winners"], batch["losers"], batch["groups"], batch.get("margin"),
                           cfg.loss_type, cfg.center_rewards_coefficient)
    if not bool(torch.isfinite(loss)):
        raise HfxError(f"reward loss is {loss.item()}{at} with finite scores (a margin of NaN/inf in the data?)")
    return loss


def evaluate_groups(model: nn.Module, tokenizer: PreTrainedTokenizerBase, groups: Sequence[Group],
                    cfg: RewardConfig, batch_size: int = 32) -> dict[str, float]:
    """Held-out pairwise accuracy, mean score margin and (when the groups carry gold scores) Spearman with gold.

    accuracy: share of the untied pairs whose preferred completion scores strictly higher (trl's accuracy).
    spearman: rank correlation of the scores of every completion with its gold score, pooled over prompts
    (scipy's spearmanr, via hfx.metrics).
    """
    if not groups:
        raise HfxError("no evaluation groups; give held-out preference rows")
    texts = [t for g in groups for t in g.texts]
    scores = score_texts(model, tokenizer, texts, batch_size=batch_size, max_length=cfg.max_length,
                         append_eos=cfg.append_eos).tolist()
    right, diffs, start = 0, [], 0
    for g in groups:
        s = scores[start : start + len(g.texts)]
        for w, lo in g.pairs:
            right += s[w] > s[lo]
            diffs.append(s[w] - s[lo])
        start += len(g.texts)
    margin = sum(diffs) / len(diffs)
    # n and 95% CI for the runner's table; the pairs of one prompt share completions, so they are not
    # independent and these intervals are narrower than the truth
    out = {"accuracy": proportion(right / len(diffs), len(diffs)),
           "margin": mean(diffs, margin) if len(diffs) > 1 and math.isfinite(margin) else margin,
           "mean_score": sum(scores) / len(scores)}
    if all(len(g.gold) == len(g.texts) for g in groups):
        gold = [x for g in groups for x in g.gold]
        out["spearman"] = spearman(scores, gold)
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}


@torch.no_grad()
def shift_to_zero_mean(model: nn.Module, tokenizer: PreTrainedTokenizerBase, groups: Sequence[Group],
                       cfg: RewardConfig, batch_size: int = 32) -> float:
    """Shift the model's scores so the mean over the distinct training completions is 0; return the old mean.

    InstructGPT sets the reward model's bias so that demonstrations score 0 on average before RL; here the
    training completions play that part. An encoder's head bias takes the shift; a decoder's head has no
    bias, so the model's ``shift`` constant does (see io.py for how each is saved).
    """
    texts = list(dict.fromkeys(t for g in groups for t in g.texts))
    mean = float(score_texts(model, tokenizer, texts, batch_size=batch_size, max_length=cfg.max_length,
                             append_eos=cfg.append_eos).mean())
    apply_shift(model, mean)
    return mean


@torch.no_grad()
def apply_shift(model: nn.Module, mean: float) -> None:
    """Subtract ``mean`` from every score of ``model`` (its head's bias, else its ``shift`` constant)."""
    head = getattr(model, "head", None)
    if head is not None and head.bias is not None:
        head.bias -= mean
    else:
        model.shift = float(model.shift) - mean
