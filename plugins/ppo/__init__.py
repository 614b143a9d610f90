"""``ppo``: RLHF with PPO on a LoRA policy, its reference being the same model with the adapter disabled.

    policy = hfx.apply(model, "lora", r=16, target_modules=["q_proj", "v_proj"])
    trainer = hfx.PPOTrainer(PPOConfig(learning_rate=1e-4), tokenizer, policy, reward_model=rm,
                             train_dataset=prompts)                 # a value head is added to the policy
    trainer.train(num_updates=40)

``hfx run plugin=ppo`` trains a reward model on the bundled rankings first (the reward plugin), then runs PPO
and reports the proxy reward, the gold (VADER) score, the KL, the entropy and the clip fraction per update.
Validated against trl 1.12.0's ``trl.experimental.ppo`` (``hfx validate plugin=ppo`` with trl==1.12.0).
Lives in ``plugins/ppo/`` (installed as ``hfx_plugins.ppo``); see its README.md. Importing this package
imports no torch.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.ppo.config import PPOConfig, PPORunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".advantages": ("gae", "masked_whiten", "per_token_rewards"),
    ".apply": ("value_head",),
    ".bestofn": ("BestOfN", "best_of_n", "best_of_n_kl"),
    ".gold": ("VaderReward", "response_texts", "vader_scores"),
    ".heldout": ("held_out_rollouts",),
    ".kl": ("AdaptiveKLController", "kl_penalty"),
    ".losses": ("policy_loss", "value_loss"),
    ".plots": ("print_answers",),
    ".recipe": ("PPORecipe",),
    ".rewards": ("load_prompts", "reward_model_for"),
    ".rollout": ("build_rollout", "forward_logprobs", "last_token_scores", "sample"),
    ".trainer": ("PPOTrainer", "left_pad"),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["PPOConfig", "PPORunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="ppo", package=__name__, config_cls=PPOConfig, run_config_cls=PPORunConfig,
                recipe="PPORecipe", requires=("lora", "reward"),
                description="RLHF with PPO: LoRA policy, adapter-disabled reference, value head, trl 1.12.0 "
                            "parity")
