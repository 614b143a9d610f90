"""Tokenize texts for a reward model and score them.

The text scored is ``prompt + completion`` (trl's concatenation), tokenized with the reward model's own
tokenizer and ended with its EOS (trl appends EOS too), so the score is read at the EOS token. A policy
with another tokenizer (e.g. smollm2 policy, minilm reward model) hands over *decoded text*, which is
tokenized again here: the reward model never sees the policy's token ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from hfx.data.collate import pad_rows

__all__ = ["encode_texts", "pad_batch", "reward_scores", "score_texts", "tokenizers_differ"]

logger = logging.getLogger("hfx.reward")


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int,
                 append_eos: bool = True) -> list[list[int]]:
    """Token ids of each text (special tokens as the tokenizer adds them), EOS appended, cut to ``max_length``.

    A text longer than ``max_length`` keeps its first tokens; when EOS is appended it stays the last token,
    so the score is still read at EOS. One warning says how many texts were cut.
    """
    eos = tokenizer.eos_token_id if append_eos else None
    out, cut = [], 0
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        if eos is not None and (not ids or ids[-1] != eos):
            ids = [*ids, eos]
        if len(ids) > max_length:
            cut += 1
            ids = ids[: max_length - 1] + [ids[-1]] if eos is not None else ids[:max_length]
        out.append(ids)
    if cut:
        logger.warning("%d of %d texts are longer than the reward model's max_length=%d tokens and were cut "
                       "(start kept%s)", cut, len(out), max_length, ", EOS kept last" if eos is not None else "")
    return out


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int | None, side: str = "right") -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (B, T) padded on ``side``; the pad id is irrelevant to the score."""
    input_ids, mask = pad_rows(ids, 0 if pad_id is None else pad_id, side)  # (B, T) each
    return {"input_ids": input_ids, "attention_mask": mask}


def tokenizers_differ(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers map text to different ids (compared by vocabulary)."""
    return a is not b and a.get_vocab() != b.get_vocab()


@torch.no_grad()
def score_texts(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *,
                batch_size: int = 32, max_length: int | None = None, append_eos: bool | None = None,
                policy_tokenizer: PreTrainedTokenizerBase | None = None) -> torch.Tensor:
    """Scores (N,) of ``texts`` (``prompt + completion`` each) by a reward model, in eval mode, float32 on CPU.

    Args:
        model: A reward model (``hfx.apply(backbone, "reward")``, or any model whose ``logits`` are (B, 1)).
        tokenizer: The reward model's tokenizer.
        texts: The N texts.
        batch_size: Texts per forward pass.
        max_length: Cut longer texts (with a warning); default the applied reward config's (1024).
        append_eos: End each text with EOS; default the applied reward config's (true).
        policy_tokenizer: The policy's tokenizer, when scoring a policy's decoded outputs: a different one
            is noted once (the text is re-tokenized).

    Raises:
        HfxError: a score that is NaN or infinite (names the text).
    """
    from hfx.errors import HfxError
    from hfx.protocols import config_of

    cfg = config_of(model, "reward")
    max_length = max_length or (cfg.max_length if cfg else 1024)
    append_eos = append_eos if append_eos is not None else (cfg.append_eos if cfg else True)
    if policy_tokenizer is not None and tokenizers_differ(policy_tokenizer, tokenizer):
        logger.warning("the reward model's tokenizer differs from the policy's: its texts are decoded and re-tokenized")
    ids = encode_texts(tokenizer, texts, max_length, append_eos)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(ids), batch_size):
        batch = pad_batch(ids[start : start + batch_size], tokenizer.pad_token_id, tokenizer.padding_side)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # (b, 1)
        scores.append(logits[:, 0].float().cpu())
    model.train(was_training)
    out = torch.cat(scores) if scores else torch.zeros(0)
    bad = (~torch.isfinite(out)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise HfxError(f"reward score of text {i} is {out[i].item()} ({texts[i][:60]!r}...); the model's weights "
                       "hold NaN/inf: reload the last good checkpoint")
    return out


reward_scores = score_texts
"""Alias of :func:`score_texts`."""
