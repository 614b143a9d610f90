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

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.ppo.config import PPOConfig, PPORunConfig

_EXPORTS = {
    "AdaptiveKLController": "hfx_plugins.ppo.kl",
    "PPORecipe": "hfx_plugins.ppo.recipe",
    "PPOTrainer": "hfx_plugins.ppo.trainer",
    "gae": "hfx_plugins.ppo.advantages",
    "kl_penalty": "hfx_plugins.ppo.kl",
    "masked_whiten": "hfx_plugins.ppo.advantages",
    "per_token_rewards": "hfx_plugins.ppo.advantages",
    "policy_loss": "hfx_plugins.ppo.losses",
    "value_head": "hfx_plugins.ppo.apply",
    "value_loss": "hfx_plugins.ppo.losses",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "AdaptiveKLController",
    "PPOConfig",
    "PPORecipe",
    "PPORunConfig",
    "PPOTrainer",
    "gae",
    "kl_penalty",
    "masked_whiten",
    "per_token_rewards",
    "plugin",
    "policy_loss",
    "value_head",
    "value_loss",
]

plugin = Plugin(
    name="ppo",
    description="RLHF with PPO: LoRA policy, adapter-disabled reference, value head, trl 1.12.0 parity",
    config_cls=PPOConfig,
    run_config_cls=PPORunConfig,
    requires=("lora", "reward"),
    apply=lazy("hfx_plugins.ppo.apply:apply"),
    recipe=lazy("hfx_plugins.ppo.recipe:PPORecipe"),
    checks=lazy("hfx_plugins.ppo.checks:checks"),
    save=lazy("hfx_plugins.ppo.io:save"),
    load=lazy("hfx_plugins.ppo.io:load"),
    can_load=lazy("hfx_plugins.ppo.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
