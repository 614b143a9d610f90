"""Config of the ``grpo`` plugin (GRPO and RLOO).

:class:`GRPOConfig` holds the fields with trl 1.16's ``GRPOConfig`` / ``RLOOConfig`` names and meanings
(``num_generations``, ``beta``, ``epsilon``, ``epsilon_high``, ``loss_type``, ``scale_rewards``,
``normalize_advantages``, ``temperature``, ``max_completion_length``, ``num_iterations``,
``steps_per_generation``, ``mask_truncated_completions``, ``use_bias_correction_kl``, ``max_grad_norm``), plus ``estimator``: "grpo" (trl's
``GRPOTrainer``) or "rloo" (trl's ``RLOOTrainer``). It is what :class:`hfx_plugins.grpo.trainer.GRPOTrainer`
takes. :class:`GRPORunConfig` adds what only ``hfx run plugin=grpo`` uses (prompts, reward model, held-out
evaluation); the policy's LoRA adapter is the run's ``lora:`` section. No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hfx.errors import HfxError

__all__ = ["ESTIMATORS", "LOSS_TYPES", "SCALE_REWARDS", "GRPOConfig", "GRPORunConfig", "check_groups"]

ESTIMATORS = ("grpo", "rloo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")


def check_groups(n: int, num_generations: int) -> None:
    """Raise a one-line HfxError unless ``n`` completions split into whole groups of ``num_generations`` >= 2."""
    if num_generations < 2:
        raise HfxError(f"grpo num_generations must be at least 2 (a group-relative baseline needs two answers "
                       f"per prompt), got {num_generations}")
    if n % num_generations:
        raise HfxError(f"grpo: {n} completions do not split into whole groups of num_generations="
                       f"{num_generations}; make batch_size x steps_per_generation (or the prompts x G) a multiple of it")


@dataclass
class GRPOConfig:
    """GRPO (Shao et al. 2024, https://arxiv.org/abs/2402.03300) and RLOO (Ahmadian et al. 2024,
    https://arxiv.org/abs/2402.14740) on a LoRA policy, as trl 1.16's GRPOTrainer and RLOOTrainer."""

    estimator: str = "grpo"
    """grpo: group-normalised advantages and trl GRPOTrainer's token-level loss; rloo: leave-one-out baseline,
    the KL (k1) in the reward and trl RLOOTrainer's sequence-level ratio."""
    learning_rate: float = 1e-6
    """AdamW learning rate (trl's default 1e-6 is for full fine-tuning; a LoRA policy takes ~1e-4 or more)."""
    num_generations: int = 8
    """G, completions sampled per prompt (trl's GRPO default 8; RLOO's is 2)."""
    batch_size: int = 8
    """Completions per optimizer step (trl's per_device_train_batch_size x gradient_accumulation_steps)."""
    steps_per_generation: int = 1
    """Optimizer steps per generation batch: each update samples batch_size x steps_per_generation completions
    (whole groups) and splits them, shuffled, into that many steps (trl's steps_per_generation)."""
    num_iterations: int = 1
    """Passes over each generation batch (mu of the GRPO paper; trl's num_iterations)."""
    beta: float = 0.0
    """KL coefficient: grpo adds beta * k3(pi, ref) to each token's loss (trl GRPO's default 0); rloo subtracts
    beta * (summed k1) from each reward (trl RLOO's default 0.05)."""
    use_bias_correction_kl: bool = True
    """grpo only: multiply the k3 term by the importance ratio (trl's default; DeepSeek-V3.2's unbiased KL
    gradient). It changes the gradient even at ratio 1."""
    epsilon: float = 0.2
    """Lower clip of the ratio (1 - epsilon), and the upper one unless epsilon_high is set."""
    epsilon_high: float = -1.0
    """Upper clip (1 + epsilon_high; DAPO's clip-higher, https://arxiv.org/abs/2503.14476); -1: epsilon."""
    loss_type: str = "dapo"
    """grpo only: how token losses are averaged. grpo: per sequence, then over sequences; bnpo: over the
    step's tokens; dr_grpo: sum / (completions x max_completion_length) (https://arxiv.org/abs/2503.20783);
    dapo: sum / (the generation batch's tokens / steps_per_generation) (trl's default)."""
    scale_rewards: str = "group"
    """grpo only: divide r - group mean by the group's std (group), the batch's std (batch) or not (none)."""
    normalize_advantages: bool = False
    """rloo only: whiten the leave-one-out advantages over the batch (trl RLOOConfig's)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are computed from logits divided by it (trl's)."""
    max_completion_length: int = 512
    """Most tokens sampled per completion."""
    top_p: float = 1.0
    """trl's field, kept at 1.0: completions are sampled from exactly softmax(logits / temperature), the
    distribution the loss scores (trl samples with top_p and scores without it); another value is refused."""
    top_k: int = 0
    """trl's field, kept at 0 (no top-k), for the same reason as top_p; another value is refused."""
    min_p: float = 0.0
    """trl's field, kept at 0 (no min-p), for the same reason as top_p; another value is refused."""
    repetition_penalty: float = 1.0
    """trl's field, kept at 1.0 (no penalty), for the same reason as top_p; another value is refused."""
    mask_truncated_completions: bool = False
    """Leave completions without an EOS out of the loss (DAPO; trl's)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm at each optimizer step (transformers' default 1.0; 0: no clipping)."""
    seed: int = 0
    """Seed of the prompt order and the generation batch shuffles."""

    def __post_init__(self) -> None:
        for name, allowed in (("estimator", ESTIMATORS), ("loss_type", LOSS_TYPES), ("scale_rewards", SCALE_REWARDS)):
            if getattr(self, name) not in allowed:
                raise HfxError(f"grpo.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("batch_size", "steps_per_generation", "num_iterations", "max_completion_length"):
            if getattr(self, name) < 1:
                raise HfxError(f"grpo.{name} must be at least 1, got {getattr(self, name)}")
        check_groups(self.batch_size * self.steps_per_generation, self.num_generations)
        if not self.temperature > 0:
            raise HfxError(f"grpo.temperature must be positive (logits are divided by it), got {self.temperature}")
        for name in ("beta", "epsilon", "max_grad_norm", "learning_rate"):
            if getattr(self, name) < 0:
                raise HfxError(f"grpo.{name} must be >= 0, got {getattr(self, name)}")
        for name, neutral in (("top_p", 1.0), ("top_k", 0), ("min_p", 0.0), ("repetition_penalty", 1.0)):
            if getattr(self, name) != neutral:
                raise HfxError(f"grpo.{name}={getattr(self, name)} would sample from another distribution than the "
                               f"loss scores (softmax(logits / temperature)); leave it at {neutral} and set "
                               "grpo.temperature instead")
        if self.epsilon_high != -1.0 and self.epsilon_high < 0:
            raise HfxError(f"grpo.epsilon_high must be >= 0 (or -1: epsilon), got {self.epsilon_high}")

    @property
    def clip_high(self) -> float:
        """The upper clip: ``epsilon_high``, or ``epsilon`` when unset (trl's)."""
        return self.epsilon if self.epsilon_high == -1.0 else self.epsilon_high


@dataclass
class GRPORunConfig(GRPOConfig):
    """The ``grpo:`` section of ``hfx run``: :class:`GRPOConfig` plus the run's own settings."""

    updates: int = 16
    """Updates (one generation batch, steps_per_generation x num_iterations optimizer steps each)."""
    prompts: str = "rankings"
    """Prompts: a bundled ranking set or a folder with train and test splits that have a 'prompt' column."""
    reward_model: str = ""
    """Folder of a reward model (hfx.save of the reward plugin); empty: the default one ppo caches under
    $HFX_CACHE/ppo (trained there on first use); vader: the gold score itself (an oracle run)."""
    max_prompt_length: int = 64
    """Prompts longer than this many tokens keep their last tokens."""
    eval_prompts: int = 32
    """Held-out prompts answered before and after training (the gold score is averaged over them)."""
    eval_samples: int = 2
    """Sampled answers per held-out prompt (at grpo.temperature)."""
    shown: int = 6
    """Held-out answers printed before/after side by side."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.updates < 1 or self.max_prompt_length < 1 or self.eval_samples < 1:
            raise HfxError("grpo.updates, grpo.max_prompt_length and grpo.eval_samples must be at least 1")
        if self.eval_prompts < 0 or self.shown < 0:
            raise HfxError("grpo.eval_prompts and grpo.shown must be >= 0")

    @property
    def response_length(self) -> int:
        """ppo's name for ``max_completion_length`` (ppo's prompt and reward helpers read the section)."""
        return self.max_completion_length
