"""``grpo``: GRPO and RLOO on a LoRA policy, its reference being the same model with the adapter disabled.

    policy = hfx.apply(model, "lora", r=16, target_modules=["q_proj", "v_proj"])
    trainer = hfx.GRPOTrainer(GRPOConfig(num_generations=4, batch_size=16), tokenizer, policy,
                              reward_model=rm, train_dataset=prompts)     # GRPOConfig(estimator="rloo"): RLOO
    trainer.train(num_updates=16)
    advantages = group_advantages(rewards, num_generations=4)           # (prompts * 4,) flat, trl's order

``hfx run plugin=grpo`` reuses ppo's cached reward model (trained on the bundled rankings) and reports the held-out
gold (VADER) score before and after, the proxy reward and the KL to the reference. Validated against trl 1.16's
``GRPOTrainer`` and ``RLOOTrainer`` (``hfx validate plugin=grpo``). Lives in ``plugins/grpo/`` (installed as
``hfx_plugins.grpo``); see its README.md. Importing this package imports no torch.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.grpo.config import GRPOConfig, GRPORunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".advantages": ("group_advantages",),
    ".losses": ("grpo_loss", "k3", "rloo_loss", "sequence_kl"),
    ".recipe": ("GRPORecipe",),
    ".trainer": ("GRPOTrainer",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["GRPOConfig", "GRPORunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="grpo", package=__name__, config_cls=GRPOConfig, run_config_cls=GRPORunConfig,
                recipe="GRPORecipe", requires=("lora", "ppo", "reward"), apply=None, save=None,
                description="GRPO and RLOO (group baselines, clipped surrogate) on a LoRA policy, adapter-disabled "
                            "reference, trl 1.16 parity")
