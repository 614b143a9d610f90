"""hfx: readable, validated extensions of the Hugging Face stack.

The drop-in API is three functions (see :mod:`hfx.api`)::

    model = hfx.apply(model, "finetune", num_labels=2)
    hfx.save(model, "out")
    model = hfx.load(base_model, "out")
"""

from typing import Any

from hfx.errors import HfxError

__all__ = ["DistillationTrainer", "HfxError", "PPOTrainer", "RewardTrainer", "apply", "embed", "load", "make_student", "rankings_to_pairs", "save"]
__version__ = "0.1.0"

# Names imported on first use: they pull in torch and transformers, which would make every `hfx` command
# (even `hfx plugins` or a one-line input error) pay seconds of imports before it starts.
_LAZY = {
    "apply": "hfx.api",
    "load": "hfx.api",
    "save": "hfx.api",
    "DistillationTrainer": "hfx_plugins.distill.trainer",
    "make_student": "hfx_plugins.distill.student",
    "embed": "hfx_plugins.embed.apply",
    "PPOTrainer": "hfx_plugins.ppo.trainer",
    "RewardTrainer": "hfx_plugins.reward.trainer",
    "rankings_to_pairs": "hfx_plugins.reward.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hfx' has no attribute {name!r}")
