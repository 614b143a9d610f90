"""``reward``: a scalar reward model trained from K-way rankings (InstructGPT) or pairs (trl), read at the last real token.

    model = hfx.apply(backbone, "reward")                 # backbone: AutoModel or *ForCausalLM (LM head dropped)
    trainer = hfx.RewardTrainer(model=model, args=TrainingArguments(...), train_dataset=rankings,
                                processing_class=tokenizer)  # a transformers.Trainer
    scores = score_texts(model, tokenizer, [prompt + completion, ...])   # (N,)
    hfx.save(model, "out/rm")   # AutoModelForSequenceClassification.from_pretrained("out/rm") loads it

Lives in ``plugins/reward/`` (installed as ``hfx_plugins.reward``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.reward.config import RewardConfig, RewardRunConfig

_EXPORTS = {
    "Group": "hfx_plugins.reward.data",
    "RewardModel": "hfx_plugins.reward.head",
    "RewardRecipe": "hfx_plugins.reward.recipe",
    "RewardTrainer": "hfx_plugins.reward.trainer",
    "evaluate_groups": "hfx_plugins.reward.batching",
    "last_real_index": "hfx_plugins.reward.head",
    "load_rankings": "hfx_plugins.reward.data",
    "load_reward_model": "hfx_plugins.reward.io",
    "preference_loss": "hfx_plugins.reward.losses",
    "rankings_to_groups": "hfx_plugins.reward.data",
    "rankings_to_pairs": "hfx_plugins.reward.data",
    "reward_scores": "hfx_plugins.reward.scoring",
    "score_texts": "hfx_plugins.reward.scoring",
    "shift_to_zero_mean": "hfx_plugins.reward.batching",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Group",
    "RewardConfig",
    "RewardModel",
    "RewardRecipe",
    "RewardRunConfig",
    "RewardTrainer",
    "evaluate_groups",
    "last_real_index",
    "load_rankings",
    "load_reward_model",
    "plugin",
    "preference_loss",
    "rankings_to_groups",
    "rankings_to_pairs",
    "reward_scores",
    "score_texts",
    "shift_to_zero_mean",
]

plugin = Plugin(
    name="reward",
    description="Reward model from K-way rankings (InstructGPT loss) or pairs (trl's loss), scored at the last real token",
    config_cls=RewardConfig,
    run_config_cls=RewardRunConfig,
    record_once=True,
    apply=lazy("hfx_plugins.reward.apply:apply"),
    recipe=lazy("hfx_plugins.reward.recipe:RewardRecipe"),
    checks=lazy("hfx_plugins.reward.checks:checks"),
    save=lazy("hfx_plugins.reward.io:save"),
    load=lazy("hfx_plugins.reward.io:load"),
    can_load=lazy("hfx_plugins.reward.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
