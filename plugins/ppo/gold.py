"""The gold judgement of a PPO run: VADER's compound sentiment of each response.

VADER (Hutto & Gilbert, ICWSM 2014; PyPI ``vaderSentiment``) scores a text from a lexicon of ~7,500 words each
rated by ten people, plus rules for negation, intensifiers and punctuation; the compound score is in [-1, 1].
The bundled rankings were ranked by it, so it is the truth the reward model only approximates: a run reports it
beside the proxy reward, and where the two part ways the policy is over-optimising the reward model
(Gao et al. 2022, https://arxiv.org/abs/2210.10760).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from hfx.errors import HfxError

__all__ = ["VaderReward", "response_texts", "vader_scores"]


@functools.cache
def _analyzer() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:
        raise HfxError("the gold score needs the VADER lexicon: pip install vaderSentiment") from err
    return SentimentIntensityAnalyzer()


def vader_scores(texts: Sequence[str]) -> list[float]:
    """VADER compound score in [-1, 1] of each text."""
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]


def response_texts(tokenizer: Any, query_responses: torch.Tensor, attention_mask: torch.Tensor,
                   context_length: int) -> list[str]:
    """Decode the real tokens of each response (B, S) after ``context_length``, special tokens dropped."""
    resp, mask = query_responses[:, context_length:], attention_mask[:, context_length:].bool()
    return [tokenizer.decode(r[m].tolist(), skip_special_tokens=True).strip() for r, m in zip(resp, mask, strict=True)]


class VaderReward:
    """A reward callable for :class:`~hfx_plugins.ppo.trainer.PPOTrainer` that returns the gold score itself.

    Training on it (``ppo.reward_model=vader``) is an oracle run: the ceiling a learned reward model can reach.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, query_responses: torch.Tensor, attention_mask: torch.Tensor, context_length: int) -> torch.Tensor:
        """(B,) float32 VADER compound scores in [-1, 1] of the responses in (B, S) prompt + response ids.

        Args:
            query_responses: (B, S) token ids, the prompt in the first ``context_length`` columns.
            attention_mask: (B, S) 1 on real tokens; the response's real tokens are decoded, special tokens dropped.
            context_length: P, where the responses start.
        """
        texts = response_texts(self.tokenizer, query_responses, attention_mask, context_length)
        return torch.tensor(vader_scores(texts), dtype=torch.float32)
