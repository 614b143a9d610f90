"""``prompt_tuning``: trained input embeddings prepended to every input (Lester et al. 2021), peft's format.

    model = hfx.apply(model, "prompt_tuning", num_virtual_tokens=20, prompt_tuning_init="TEXT",
                      prompt_tuning_init_text="Classify the review:", tokenizer=tok)   # a transformers model
    model(**inputs).logits                    # (B, T, V): aligned with input_ids, the virtual positions dropped
    hfx.save(model, "out/prompt")             # peft's format: PeftModel.from_pretrained(base, "out/prompt")
    model = hfx.load(base, "out/prompt")      # hfx- or peft-saved; a mismatch is an error

Lives in ``plugins/prompt_tuning/`` (installed as ``hfx_plugins.prompt_tuning``); see its README.md. Importing
this package imports no torch: the public names below are loaded from their modules on first use.
"""

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.prompt_tuning.config import PromptTuningConfig, PromptTuningRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".apply": ("get_encoder",),
    ".encoder": ("PromptEmbedding",),
    ".inject": ("PromptInjector",),
    ".recipe": ("PromptTuningRecipe",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["PromptTuningConfig", "PromptTuningRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="prompt_tuning", package=__name__, config_cls=PromptTuningConfig,
                run_config_cls=PromptTuningRunConfig, recipe="PromptTuningRecipe",
                apply_inputs=("tokenizer",),
                description="Prompt tuning (trained virtual-token embeddings; random, vocabulary or text "
                            "init) in peft's format")
