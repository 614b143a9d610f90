"""Config of the ``ppo`` plugin.

:class:`PPOConfig` holds PPO's fields with trl 1.12.0's ``PPOConfig`` names and meanings (``kl_coef``,
``kl_estimator``, ``cliprange``, ``cliprange_value``, ``vf_coef``, ``gamma``, ``lam``, ``whiten_rewards``,
``num_ppo_epochs``, ``num_mini_batches``, ``response_length``, ``temperature``, ``missing_eos_penalty``,
``stop_token``, ``stop_token_id``), plus what hfx adds: where the score goes (``score_position``), which
value model (``value_model``) and the adaptive KL controller of Ziegler et al. 2019 with trl 0.11's names
(``adap_kl_ctrl``, ``target``, ``horizon``). It is what ``hfx.apply(model, "ppo", ...)`` and
:class:`hfx_plugins.ppo.trainer.PPOTrainer` take. :class:`PPORunConfig` adds what only ``hfx run`` uses
(the reward model, the prompts, the held-out evaluation); the policy's LoRA adapter is the ``lora:`` section of
the run (``lora.r``, ``lora.lora_alpha``, ``lora.target_modules``), set by ppo's preset. No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hfx.errors import HfxError

__all__ = ["KL_ESTIMATORS", "SCORE_POSITIONS", "VALUE_MODELS", "PPOConfig", "PPORunConfig"]

KL_ESTIMATORS = ("k1", "k3")
SCORE_POSITIONS = ("last", "eos+1")
VALUE_MODELS = ("head", "separate")


@dataclass
class PPOConfig:
    """PPO with a clipped surrogate and a clipped value loss (https://arxiv.org/abs/1707.06347), as trl 1.12.0."""

    learning_rate: float = 3e-6
    """AdamW learning rate (trl's default 3e-6 is for full fine-tuning; a LoRA policy takes ~1e-4 or more)."""
    batch_size: int = 8
    """Prompts per rollout (trl's per_device_train_batch_size x gradient_accumulation_steps)."""
    num_mini_batches: int = 1
    """Mini-batches per rollout in each PPO epoch (one optimizer step each); must divide batch_size."""
    num_ppo_epochs: int = 4
    """Passes over each rollout (a new shuffle each pass)."""
    response_length: int = 53
    """Most tokens sampled per response."""
    temperature: float = 0.7
    """Sampling temperature; the rollout's, the reference's and the training forward's log-probs are all
    computed from logits divided by it, so the KL compares the distributions actually sampled from."""
    stop_token: str = "eos"
    """eos: a response ends at the tokenizer's EOS (trl's stop_token='eos'); none: run to response_length."""
    stop_token_id: int = -1
    """Explicit stop token id (overrides stop_token); -1: unset."""
    missing_eos_penalty: float = 0.0
    """Subtracted from the score of a response that has no stop token (0: none; trl's None)."""
    kl_coef: float = 0.05
    """beta of reward = score - beta * KL per token (the initial beta when adap_kl_ctrl is on)."""
    kl_estimator: str = "k1"
    """k1: log p - log p_ref (unbiased, can be negative per token); k3: r - 1 - log r with r = p_ref / p
    (unbiased, never negative). http://joschu.net/blog/kl-approx.html"""
    cliprange: float = 0.2
    """epsilon of the clipped policy ratio (1 - eps, 1 + eps)."""
    cliprange_value: float = 0.2
    """How far a new value may move from the rollout's value before its loss is clipped."""
    vf_coef: float = 0.1
    """Weight of the value loss in loss = policy loss + vf_coef * value loss."""
    gamma: float = 1.0
    """Discount factor of GAE."""
    lam: float = 0.95
    """lambda of GAE (https://arxiv.org/abs/1506.02438)."""
    whiten_rewards: bool = False
    """Scale the per-token rewards to unit variance over the valid tokens (mean kept), as trl."""
    whiten_advantages: bool = True
    """Whiten the advantages over the valid tokens of the rollout (trl always does)."""
    score_position: str = "last"
    """Token that receives the score: last (the last real token of the response: its EOS, or its last token
    when it has none) or eos+1 (the first position after EOS, as trl 1.12.0 and lm-human-preferences; kept
    for parity)."""
    value_model: str = "head"
    """head: a linear value head on the policy's own trunk (no second model in memory); separate: a value
    model of its own (trl's way; PPOTrainer's value_model argument, e.g. a copy of the reward model)."""
    adap_kl_ctrl: bool = False
    """Adaptive KL controller (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593): beta follows the
    measured KL towards `target`."""
    target: float = 6.0
    """Adaptive KL: the KL per response (nats, summed over tokens) that beta steers towards."""
    horizon: float = 10000.0
    """Adaptive KL: episodes over which beta may change by a factor of e^0.2 at most."""
    max_grad_norm: float = 0.0
    """Clip the global gradient norm to this value at each optimizer step (0: no clipping, as trl)."""
    seed: int = 0
    """Seed of the sampling and of the mini-batch shuffles."""

    def __post_init__(self) -> None:
        if self.kl_estimator not in KL_ESTIMATORS:
            raise HfxError(f"ppo.kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        if self.score_position not in SCORE_POSITIONS:
            raise HfxError(f"ppo.score_position must be one of {', '.join(SCORE_POSITIONS)}, got {self.score_position!r}")
        if self.value_model not in VALUE_MODELS:
            raise HfxError(f"ppo.value_model must be one of {', '.join(VALUE_MODELS)}, got {self.value_model!r}")
        if self.stop_token not in ("eos", "none"):
            raise HfxError(f"ppo.stop_token must be eos or none, got {self.stop_token!r}")
        for name in ("batch_size", "num_mini_batches", "num_ppo_epochs", "response_length"):
            if getattr(self, name) < 1:
                raise HfxError(f"ppo.{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.num_mini_batches:
            raise HfxError(f"ppo.num_mini_batches ({self.num_mini_batches}) must divide ppo.batch_size "
                           f"({self.batch_size}): each optimizer step takes batch_size / num_mini_batches rollouts")
        if self.whiten_rewards and self.batch_size // self.num_mini_batches < 8:
            raise HfxError("ppo.whiten_rewards needs at least 8 rollouts per mini-batch (as trl); raise "
                           "ppo.batch_size or lower ppo.num_mini_batches")
        if not self.temperature > 0:
            raise HfxError(f"ppo.temperature must be positive (logits are divided by it), got {self.temperature}")
        for name in ("kl_coef", "cliprange", "cliprange_value", "vf_coef", "missing_eos_penalty", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise HfxError(f"ppo.{name} must be >= 0, got {getattr(self, name)}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise HfxError(f"ppo.gamma and ppo.lam must be in [0, 1], got {self.gamma} and {self.lam}")
        if self.adap_kl_ctrl and not (self.target > 0 and self.horizon > 0 and self.kl_coef > 0):
            raise HfxError("ppo.adap_kl_ctrl needs ppo.kl_coef > 0 (the initial beta), ppo.target > 0 and ppo.horizon > 0")
        if self.learning_rate < 0:
            raise HfxError(f"ppo.learning_rate must be >= 0, got {self.learning_rate}")


@dataclass
class PPORunConfig(PPOConfig):
    """The ``ppo:`` section of ``hfx run``: :class:`PPOConfig` plus the run's own settings."""

    updates: int = 40
    """PPO updates (rollout + num_ppo_epochs x num_mini_batches optimizer steps each)."""
    prompts: str = "rankings"
    """Prompts: a bundled ranking set or a folder with train and test splits that have a 'prompt' column."""
    reward_model: str = ""
    """Folder of a reward model (hfx.save of the reward plugin); empty: train one on the bundled rankings with
    the reward plugin's default settings, or reuse the one cached under $HFX_CACHE/ppo."""
    max_prompt_length: int = 64
    """Prompts longer than this many tokens are cut from the left."""
    eval_prompts: int = 32
    """Held-out prompts answered before and after training (the gold score is averaged over them)."""
    eval_samples: int = 2
    """Sampled answers per held-out prompt for the gold score (at ppo.temperature)."""
    shown: int = 6
    """Held-out answers printed before/after side by side."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.updates < 1 or self.max_prompt_length < 1 or self.eval_samples < 1:
            raise HfxError("ppo.updates, ppo.max_prompt_length and ppo.eval_samples must be at least 1")
        if self.eval_prompts < 0 or self.shown < 0:
            raise HfxError("ppo.eval_prompts and ppo.shown must be >= 0")
