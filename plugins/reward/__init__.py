"""``reward``: a scalar reward model trained from K-way rankings (InstructGPT) or pairs (trl), read at the last real token.

    model = hfx.apply(backbone, "reward")                 # backbone: AutoModel or *ForCausalLM (LM head dropped)
    trainer = hfx.RewardTrainer(model=model, args=TrainingArguments(...), train_dataset=rankings,
                                processing_class=tokenizer)  # a transformers.Trainer
    scores = score_texts(model, tokenizer, [prompt + completion, ...])   # (N,)
    hfx.save(model, "out/rm")   # AutoModelForSequenceClassification.from_pretrained("out/rm") loads it

Lives in ``plugins/reward/`` (installed as ``hfx_plugins.reward``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.reward.config import RewardConfig, RewardRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".batching": ("evaluate_groups", "shift_to_zero_mean"),
    ".data": ("Group", "load_rankings", "rankings_to_groups", "rankings_to_pairs"),
    ".default_model": ("default_recipe_fingerprint", "train_default_model"),
    ".head": ("RewardModel", "last_real_index"),
    ".io": ("load_reward_model",),
    ".losses": ("preference_loss",),
    ".recipe": ("RewardRecipe",),
    ".scoring": ("reward_scores", "score_texts"),
    ".trainer": ("RewardTrainer",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["RewardConfig", "RewardRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="reward", package=__name__, config_cls=RewardConfig, run_config_cls=RewardRunConfig,
                recipe="RewardRecipe", record_once=True,
                description="Reward model from K-way rankings (InstructGPT loss) or pairs (trl's loss), "
                            "scored at the last real token")
