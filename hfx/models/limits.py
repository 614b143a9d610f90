"""The longest input a model can really embed, from its position table, config and tokenizer.

``max_position_embeddings`` is not always the number of usable positions. RoBERTa and the models built
like it (XLM-R, CamemBERT, MPNet, Longformer, ...) number positions from ``padding_idx + 1`` (fairseq's
``make_positions``), so a table of 130 rows holds 130 - padding_idx - 1 = 129 inputs at padding index 0,
and 512 at RoBERTa's 514 / padding index 1. A tokenizer saved without ``model_max_length`` reports a huge
number, so tokenizer limits alone let a long text reach past the table: an index error deep in torch.

:func:`max_input_length` takes the smallest of: the learned position table (less RoBERTa's offset), the
config's declared positions, the tokenizer's limit (when it has a real one) and the length asked for,
and warns when the length asked for is longer than the model can take. Callers truncate to it.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

__all__ = ["max_input_length", "position_limit"]

_HUGE = 10**8  # tokenizers without a limit report VERY_LARGE_INTEGER (about 1e30)
_POSITION_CONFIG_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def _learned_table(model: nn.Module) -> tuple[int, int] | None:
    """(rows, first usable row) of a learned absolute position table, or None (rotary, relative, none)."""
    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if isinstance(module, nn.Embedding) and leaf in ("position_embeddings", "wpe", "embed_positions"):
            pad = module.padding_idx
            # RoBERTa-style position ids run padding_idx + 1 .. padding_idx + T (pad positions get padding_idx).
            offset = pad + 1 if pad is not None and leaf == "position_embeddings" else 0
            # OPT/BART-style learned tables (embed_positions) carry their own offset attribute.
            offset = max(offset, int(getattr(module, "offset", 0) or 0))
            return module.num_embeddings, offset
    return None


def position_limit(model: Any) -> int | None:
    """Positions ``model`` can embed: its learned table less the offset, else the config's declared count.

    Args:
        model: A transformers model (any head, or wrapped by peft) or a bare config.

    Returns:
        The number of tokens, or None when neither a table nor the config bounds it (T5's relative buckets).
    """
    config = getattr(model, "config", model)
    if isinstance(model, nn.Module):
        table = _learned_table(model)
        if table is not None:
            rows, offset = table
            return rows - offset
    for key in _POSITION_CONFIG_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            if getattr(config, "model_type", "") in _OFFSET_TYPES and getattr(config, "pad_token_id", None) is not None:
                return value - int(config.pad_token_id) - 1
            return value
    return None


# Model types whose position ids start at pad_token_id + 1 (used when only a config is given).
_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer", "data2vec-text",
                 "roberta-prelayernorm", "ibert", "xmod", "luke", "markuplm", "esm")


def max_input_length(model: Any, tokenizer: Any = None, requested: int = 0, *, what: str = "max_length") -> int:
    """Longest input, in tokens, that ``model`` can take: the smallest of its limits and ``requested``.

    Args:
        model: A transformers model or config (see :func:`position_limit`).
        tokenizer: Its tokenizer; its ``model_max_length`` counts when it is a real limit (< 1e8).
        requested: The length asked for (a config's max_length); 0 = as long as the model allows.
        what: The option's name, for the warning.

    Returns:
        A positive token count (``requested`` when no limit is known and one was asked for, else 10**8).

    Warns:
        UserWarning: ``requested`` is longer than the model can embed (the limit is used instead).
    """
    limits = {"position table": position_limit(model)}
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < _HUGE:
        limits["tokenizer"] = tok_max
    known = {k: v for k, v in limits.items() if v is not None and v > 0}
    cap = min(known.values()) if known else _HUGE
    if requested and requested > cap:
        source = min(known, key=known.__getitem__)
        warnings.warn(f"{what}={requested} is longer than the model can take ({cap} tokens, from its {source}); "
                      f"inputs are truncated to {cap} tokens", UserWarning, stacklevel=2)
        return cap
    return requested or cap
