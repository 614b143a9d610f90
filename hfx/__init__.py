"""hfx: readable, validated extensions of the Hugging Face stack.

The drop-in API is three functions (see :mod:`hfx.api`)::

    model = hfx.apply(model, "finetune", num_labels=2)
    hfx.save(model, "out")
    model = hfx.load(base_model, "out")
"""

from typing import Any

from hfx.api import apply, load, save
from hfx.errors import HfxError

__all__ = ["DistillationTrainer", "HfxError", "apply", "load", "make_student", "save"]
__version__ = "0.1.0"

# Names imported on first use: they pull in transformers.Trainer, which would slow `import hfx` for everyone.
_LAZY = {
    "DistillationTrainer": "hfx_plugins.distill.trainer",
    "make_student": "hfx_plugins.distill.student",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hfx' has no attribute {name!r}")
