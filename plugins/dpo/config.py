"""Config of the ``dpo`` plugin.

:class:`DPOConfig` holds the DPO fields with trl 1.16's ``DPOConfig`` names and meanings (``beta``,
``loss_type``, ``max_length``, ``truncation_mode``, ``disable_dropout``); the optimizer, schedule and batch
size are ``transformers.TrainingArguments`` (for :class:`hfx.DPOTrainer`) or the run's ``train:`` section (for
``hfx run``), as in trl, where ``DPOConfig`` subclasses ``TrainingArguments``. :class:`DPORunConfig` adds what
only ``hfx run plugin=dpo`` uses (which pairs, the held-out evaluation). The policy's LoRA adapter is the run's
``lora:`` section, set by dpo's preset. No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hfx.errors import HfxError

__all__ = ["LOSS_TYPES", "PAIRS", "DPOConfig", "DPORunConfig", "check_beta_and_loss"]

LOSS_TYPES = ("sigmoid", "hinge", "ipo")
PAIRS = ("all", "best_vs_worst")


def check_beta_and_loss(beta: float, loss_type: str) -> None:
    """Raise a one-line HfxError for ``beta <= 0`` or an unknown ``loss_type`` (shared by the config and dpo_loss)."""
    if loss_type not in LOSS_TYPES:
        raise HfxError(f"dpo loss_type must be one of {', '.join(LOSS_TYPES)} (trl's names), got {loss_type!r}")
    if not beta > 0:
        raise HfxError(f"dpo beta must be > 0 (trl's default 0.1; it scales the log-ratio margin), got {beta}")


@dataclass
class DPOConfig:
    """Direct preference optimisation (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290), as trl 1.16."""

    beta: float = 0.1
    """beta of DPO: the strength of the implicit KL constraint to the reference (IPO's tau for loss_type=ipo)."""
    loss_type: str = "sigmoid"
    """With h = log(pi/ref) of the chosen answer minus that of the rejected one (sums over completion tokens):
    sigmoid: -log sigmoid(beta h) (DPO); hinge: relu(1 - beta h) (SLiC, https://arxiv.org/abs/2305.10425);
    ipo: (h' - 1/(2 beta))^2 with h' from per-token averaged log-probs (IPO, https://arxiv.org/abs/2310.12036)."""
    max_length: int = 1024
    """Longest prompt + completion in tokens; a longer one keeps its start (trl's truncation_mode keep_start)."""
    disable_dropout: bool = True
    """Set every dropout probability of the model to 0 (trl's default), so policy and reference see one network."""

    def __post_init__(self) -> None:
        check_beta_and_loss(self.beta, self.loss_type)
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise HfxError(f"dpo.max_length must be an integer >= 2 (tokens), got {self.max_length!r}")


@dataclass
class DPORunConfig(DPOConfig):
    """The ``dpo:`` section of ``hfx run``: :class:`DPOConfig` plus the run's own settings."""

    pairs: str = "best_vs_worst"
    """Pairs from each ranking: all (every untied ordered pair, hfx.rankings_to_pairs: C(K,2) per prompt) or
    best_vs_worst (the best-ranked answer against the worst-ranked one; every such pair when ranks tie)."""
    eval_pairs: int = 64
    """Held-out pairs (test split) scored for the implied-reward accuracy (chosen's beta log-ratio above
    rejected's)."""
    eval_prompts: int = 32
    """Held-out prompts answered before and after training (gold = VADER compound of each answer)."""
    eval_samples: int = 2
    """Sampled answers per held-out prompt."""
    max_new_tokens: int = 24
    """Most tokens per sampled answer."""
    temperature: float = 0.8
    """Sampling temperature of the held-out answers; their KL to the reference uses the same temperature."""
    max_prompt_length: int = 64
    """Held-out prompts longer than this many tokens keep their last tokens."""
    shown: int = 6
    """Held-out answers printed before/after side by side."""
    proxy_reward_model: str = ""
    """Folder of a reward model (hfx.save of the reward plugin) that also scores the held-out answers, reported as
    proxy_reward for comparison with ppo and grpo (DPO does not train on it); empty: none."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pairs not in PAIRS:
            raise HfxError(f"dpo.pairs must be one of {', '.join(PAIRS)}, got {self.pairs!r}")
        for name in ("eval_samples", "max_new_tokens", "max_prompt_length"):
            if getattr(self, name) < 1:
                raise HfxError(f"dpo.{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_pairs < 0 or self.eval_prompts < 0 or self.shown < 0:
            raise HfxError("dpo.eval_pairs, dpo.eval_prompts and dpo.shown must be >= 0")
        if not self.temperature > 0:
            raise HfxError(f"dpo.temperature must be positive, got {self.temperature}")
