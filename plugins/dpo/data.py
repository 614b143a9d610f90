"""DPO's data: (prompt, chosen, rejected) pairs from rankings, tokenized and batched as trl 1.16 does.

- :func:`preference_pairs`: ranking rows to pairs, all of them (``hfx.rankings_to_pairs``, the reward plugin's
  expansion) or the best against the worst of each prompt; trl's pairwise rows pass through.
- :func:`tokenize_pair`: trl's ``DPOTrainer._prepare_dataset`` for plain text: EOS appended to each completion
  that lacks it, ``prompt`` and ``prompt + completion`` tokenized on their own, the completion starting where the
  two token lists part (``trl.data_utils.common_prefix_length``).
- :func:`collate_pairs`: trl's ``DataCollatorForPreference``: chosen rows first, then rejected rows, right
  padding, a ``completion_mask`` that is 1 exactly on completion tokens (never on a prompt or pad token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from hfx.errors import HfxError
from hfx_plugins.reward import rankings_to_pairs

__all__ = ["collate_pairs", "preference_pairs", "tokenize_pair"]


def preference_pairs(rows: Iterable[Mapping[str, Any]], pairs: str = "all") -> list[dict[str, str]]:
    """``{"prompt", "chosen", "rejected"}`` rows from ranking rows (K >= 2 ranked completions) or pairwise rows.

    Args:
        rows: Ranking rows (``prompt``, ``completions``, ``ranking``, optional ``ties``) or trl's pairwise rows.
        pairs: ``"all"``: every untied ordered pair (C(K,2) per prompt without ties); ``"best_vs_worst"``: each
            best-ranked completion against each worst-ranked one (one pair per prompt without ties).

    Raises:
        HfxError: an unknown ``pairs``; a malformed row or a repeated rank without ``ties: true`` (the reward
            plugin's checks, naming the row); a row whose completions all share one rank (no preference).
    """
    if pairs not in ("all", "best_vs_worst"):
        raise HfxError(f"pairs must be all or best_vs_worst, got {pairs!r}")
    rows = list(rows)
    rankings_to_pairs(rows)  # checks every row first, so that its errors name the row
    out: list[dict[str, str]] = []
    for i, row in enumerate(rows):
        if "ranking" not in row:  # a pairwise row
            out.append({k: row[k] for k in ("prompt", "chosen", "rejected") if k in row})
            continue
        ranks, texts = list(row["ranking"]), list(row["completions"])
        if len(set(ranks)) == 1:
            raise HfxError(f"ranking row {i}: every completion shares rank {ranks[0]}, so DPO has no preferred answer; "
                           "drop the row or rank its completions")
        if pairs == "all":
            out += rankings_to_pairs([row])
            continue
        best, worst = min(ranks), max(ranks)
        out += [{"prompt": row.get("prompt") or "", "chosen": texts[a], "rejected": texts[b]}
                for a in range(len(ranks)) if ranks[a] == best for b in range(len(ranks)) if ranks[b] == worst]
    if not out:
        raise HfxError("no preference pairs in the data; give ranking rows (prompt, completions, ranking) or "
                       "chosen/rejected rows")
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(tokenizer: Any, prompt: str, chosen: str, rejected: str) -> dict[str, list[int]]:
    """``{"prompt_ids", "chosen_ids", "rejected_ids"}`` of one plain-text pair, as trl 1.16 tokenizes it.

    trl (``trl/trainer/dpo_trainer.py``, ``DPOTrainer._prepare_dataset``: ``add_eos`` then ``tokenize_fn``)
    appends the tokenizer's EOS to a completion that does not end with it, tokenizes ``prompt`` and
    ``prompt + completion`` with the tokenizer's special tokens, and starts the completion where the prompt's
    tokens and each full text's tokens part (a merge across the boundary moves that point left).
    """
    eos = tokenizer.eos_token or ""
    chosen = chosen if chosen.endswith(eos) else chosen + eos
    rejected = rejected if rejected.endswith(eos) else rejected + eos
    prompt_ids = tokenizer(text=prompt)["input_ids"]
    full_chosen = tokenizer(text=prompt + chosen)["input_ids"]
    full_rejected = tokenizer(text=prompt + rejected)["input_ids"]
    n = min(_common_prefix(prompt_ids, full_chosen), _common_prefix(prompt_ids, full_rejected))
    return {"prompt_ids": prompt_ids[:n], "chosen_ids": full_chosen[n:], "rejected_ids": full_rejected[n:]}


def collate_pairs(examples: Sequence[Mapping[str, list[int]]], pad_token_id: int,
                  max_length: int | None = None) -> dict[str, torch.Tensor]:
    """A batch of P tokenized pairs as (2P, T) ``input_ids``, ``attention_mask`` and ``completion_mask``.

    Rows 0..P-1 are ``prompt + chosen``, rows P..2P-1 ``prompt + rejected`` (trl's ``DataCollatorForPreference``),
    right-padded with ``pad_token_id``; a row longer than ``max_length`` keeps its first ``max_length`` tokens.
    ``completion_mask`` is 1 on completion tokens only, so the pad token is never scored even when it is EOS.
    """
    seqs, comp = [], []
    for side in ("chosen_ids", "rejected_ids"):
        for ex in examples:
            ids = list(ex["prompt_ids"]) + list(ex[side])
            mask = [0] * len(ex["prompt_ids"]) + [1] * len(ex[side])
            seqs.append(ids[:max_length] if max_length else ids)
            comp.append(mask[:max_length] if max_length else mask)
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)  # (2P, T)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    completion = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (ids, mask) in enumerate(zip(seqs, comp, strict=True)):
        input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, :len(ids)] = 1
        completion[i, :len(ids)] = torch.tensor(mask, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}
