"""``prompt_tuning``: trained input embeddings prepended to every input (Lester et al. 2021), peft's format.

    model = hfx.apply(model, "prompt_tuning", num_virtual_tokens=20, prompt_tuning_init="TEXT",
                      prompt_tuning_init_text="Classify the review:", tokenizer=tok)   # a transformers model
    model(**inputs).logits                    # (B, T, V): aligned with input_ids, the virtual positions dropped
    hfx.save(model, "out/prompt")             # peft's format: PeftModel.from_pretrained(base, "out/prompt")
    model = hfx.load(base, "out/prompt")      # hfx- or peft-saved; a mismatch is an error

Lives in ``plugins/prompt_tuning/`` (installed as ``hfx_plugins.prompt_tuning``); see its README.md. Importing
this package imports no torch: the public names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.prompt_tuning.config import PromptTuningConfig, PromptTuningRunConfig

_EXPORTS = {
    "PromptEmbedding": "hfx_plugins.prompt_tuning.encoder",
    "PromptInjector": "hfx_plugins.prompt_tuning.inject",
    "PromptTuningRecipe": "hfx_plugins.prompt_tuning.recipe",
    "get_encoder": "hfx_plugins.prompt_tuning.apply",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["PromptEmbedding", "PromptInjector", "PromptTuningConfig", "PromptTuningRecipe", "PromptTuningRunConfig",
           "get_encoder", "plugin"]

plugin = Plugin(
    name="prompt_tuning",
    description="Prompt tuning (trained virtual-token embeddings; random, vocabulary or text init) in peft's format",
    config_cls=PromptTuningConfig,
    run_config_cls=PromptTuningRunConfig,
    apply=lazy("hfx_plugins.prompt_tuning.apply:apply"),
    apply_inputs=("tokenizer",),
    recipe=lazy("hfx_plugins.prompt_tuning.recipe:PromptTuningRecipe"),
    checks=lazy("hfx_plugins.prompt_tuning.checks:checks"),
    save=lazy("hfx_plugins.prompt_tuning.io:save"),
    load=lazy("hfx_plugins.prompt_tuning.io:load"),
    can_load=lazy("hfx_plugins.prompt_tuning.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
