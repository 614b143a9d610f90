"""hfx: readable, validated extensions of the Hugging Face stack.

The drop-in API is three functions (see :mod:`hfx.api`)::

    model = hfx.apply(model, "finetune", num_labels=2)
    hfx.save(model, "out")
    model = hfx.load(base_model, "out")
"""

from typing import Any

from hfx.errors import HfxError

__all__ = ["DPOTrainer", "DistillationTrainer", "GRPOTrainer", "HfxError", "PPOTrainer", "RewardTrainer", "apply", "embed", "load", "make_student", "rankings_to_pairs", "save"]
__version__ = "0.1.0"

# Names imported on first use: they pull in torch and transformers, which would make every `hfx` command
# (even `hfx plugins` or a one-line input error) pay seconds of imports before it starts. The plugin names
# are each plugin's public names (the `__all__` of hfx_plugins.<name>), never its internals.
_LAZY = {
    "apply": "hfx.api",
    "load": "hfx.api",
    "save": "hfx.api",
    "DPOTrainer": "hfx_plugins.dpo",
    "DistillationTrainer": "hfx_plugins.distill",
    "GRPOTrainer": "hfx_plugins.grpo",
    "make_student": "hfx_plugins.distill",
    "embed": "hfx_plugins.embed",
    "PPOTrainer": "hfx_plugins.ppo",
    "RewardTrainer": "hfx_plugins.reward",
    "rankings_to_pairs": "hfx_plugins.reward",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hfx' has no attribute {name!r}")
