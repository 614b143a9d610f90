"""``dpo``: direct preference optimisation of a LoRA policy, its reference being the same model with the adapter disabled.

    policy = hfx.apply(model, "lora", r=16, target_modules=["q_proj", "v_proj"])
    trainer = hfx.DPOTrainer(model=policy, args=TrainingArguments(...), train_dataset=rows,
                             processing_class=tokenizer, dpo_config=DPOConfig(beta=0.1))   # a transformers.Trainer
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps,
                                                        ref_rejected_logps, beta=0.1, loss_type="sigmoid")

``hfx run plugin=dpo`` trains smollm2-135m + LoRA on the bundled rankings (no reward model) and reports the
held-out gold (VADER) score before and after, the implied-reward accuracy and the KL to the reference.
Validated against trl 1.16's ``DPOTrainer`` (``hfx validate plugin=dpo``). Lives in ``plugins/dpo/``
(installed as ``hfx_plugins.dpo``); see its README.md. Importing this package imports no torch.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.dpo.config import DPOConfig, DPORunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".data": ("collate_pairs", "preference_pairs", "tokenize_pair"),
    ".logps": ("completion_logps", "dpo_batch_loss"),
    ".losses": ("dpo_loss",),
    ".recipe": ("DPORecipe",),
    ".trainer": ("DPOTrainer",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DPOConfig", "DPORunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="dpo", package=__name__, config_cls=DPOConfig, run_config_cls=DPORunConfig,
                recipe="DPORecipe", requires=("lora", "ppo", "reward"), apply=None, save=None,
                description="Direct preference optimisation (sigmoid, hinge, ipo) of a LoRA policy from rankings, "
                            "adapter-disabled reference, trl 1.16 parity")
