"""``hfx_plugins.prompt_learning``: what the ``prefix_tuning`` and ``prompt_tuning`` plugins share (a library, not
a plugin: it registers nothing and has no entry point).

    from hfx_plugins.prompt_learning import fill_sizes, read_adapter, write_adapter, LabelWordRecipe

- peft's prompt-learning adapter files, read and written strictly (``peft_files.py``);
- the sizes peft reads from a model config and the families it serves (``sizes.py``);
- the forward-hook plumbing: positional arguments, the cache's argument name, the widened mask (``hooks.py``);
- the configs' shared fields and the label-word task of their ``hfx run`` (``config.py``, torch-free);
- the label-word task's rows and scores (``label_words.py``) and its recipe (``recipe.py``);
- the checks' generation check (``parity.py``; the rest is :mod:`hfx.parity`);
- how the two meet the plugins that read hidden states or disable adapters (``compose.py``).

The plugins import only the names below. Importing this package imports no torch: each name loads from its
module on first use.
"""

from hfx.registry import lazy_exports

_EXPORTS = {
    "CONFIG_NAME": "hfx_plugins.prompt_learning.peft_files",
    "EMBEDDINGS_KEY": "hfx_plugins.prompt_learning.peft_files",
    "ENCODER_ATTRS": "hfx_plugins.prompt_learning.compose",
    "LabelWordRecipe": "hfx_plugins.prompt_learning.recipe",
    "LabelWordTask": "hfx_plugins.prompt_learning.config",
    "TASK_TYPES": "hfx_plugins.prompt_learning.config",
    "WEIGHTS_NAME": "hfx_plugins.prompt_learning.peft_files",
    "adapter_config": "hfx_plugins.prompt_learning.peft_files",
    "bind_inputs": "hfx_plugins.prompt_learning.hooks",
    "cache_argument": "hfx_plugins.prompt_learning.hooks",
    "check_label_task": "hfx_plugins.prompt_learning.config",
    "check_prompt_learning": "hfx_plugins.prompt_learning.config",
    "check_reference": "hfx_plugins.prompt_learning.compose",
    "collate": "hfx_plugins.prompt_learning.label_words",
    "drop_virtual": "hfx_plugins.prompt_learning.compose",
    "encode_rows": "hfx_plugins.prompt_learning.label_words",
    "extend_mask": "hfx_plugins.prompt_learning.hooks",
    "fill_sizes": "hfx_plugins.prompt_learning.sizes",
    "find_encoder": "hfx_plugins.prompt_learning.hooks",
    "generation_mismatch": "hfx_plugins.prompt_learning.parity",
    "greedy_by_forward": "hfx_plugins.prompt_learning.parity",
    "is_adapter": "hfx_plugins.prompt_learning.peft_files",
    "label_word_scores": "hfx_plugins.prompt_learning.label_words",
    "model_sizes": "hfx_plugins.prompt_learning.sizes",
    "prompt_plugins": "hfx_plugins.prompt_learning.compose",
    "read_adapter": "hfx_plugins.prompt_learning.peft_files",
    "refuse_trunk_reader": "hfx_plugins.prompt_learning.compose",
    "task_type_of": "hfx_plugins.prompt_learning.sizes",
    "write_adapter": "hfx_plugins.prompt_learning.peft_files",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["CONFIG_NAME", "EMBEDDINGS_KEY", "ENCODER_ATTRS", "TASK_TYPES", "WEIGHTS_NAME", "LabelWordRecipe",
           "LabelWordTask", "adapter_config", "bind_inputs", "cache_argument", "check_label_task",
           "check_prompt_learning", "check_reference", "collate", "drop_virtual", "encode_rows", "extend_mask",
           "fill_sizes", "find_encoder", "generation_mismatch", "greedy_by_forward", "is_adapter",
           "label_word_scores", "model_sizes", "prompt_plugins", "read_adapter", "refuse_trunk_reader",
           "task_type_of", "write_adapter"]
