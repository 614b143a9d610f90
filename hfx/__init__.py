"""hfx: readable, validated extensions of the Hugging Face stack.

The drop-in API is three functions (see :mod:`hfx.api`)::

    model = hfx.apply(model, "finetune", num_labels=2)
    hfx.save(model, "out")
    model = hfx.load(base_model, "out")
"""

from hfx.api import apply, load, save
from hfx.errors import HfxError

__all__ = ["HfxError", "apply", "load", "save"]
__version__ = "0.1.0"
