"""``distill``: knowledge distillation of a teacher into a shallower student.

- :class:`DistillationTrainer` (also ``from hfx import DistillationTrainer``): a ``transformers.Trainer`` whose
  loss is alpha * T^2 * D(teacher, student) + (1 - alpha) * CE + an optional hidden-state cosine term, for
  classification, masked LM, causal LM, seq2seq and embedding regression, online or from a teacher cache;
- :func:`make_student`: every other teacher layer (DistilBERT's initialisation), any subset, or a config;
- ``hfx run plugin=distill``: minilm -> 3 layers (embeddings); ``preset=decoder``: smollm2-135m -> 15 layers.
"""

from pathlib import Path

from hfx.registry import Plugin
from hfx_plugins.distill.apply import apply
from hfx_plugins.distill.cache import cache_teacher_outputs
from hfx_plugins.distill.checks import checks
from hfx_plugins.distill.config import DistillConfig
from hfx_plugins.distill.io import can_load, load, save
from hfx_plugins.distill.objective import DistillationObjective
from hfx_plugins.distill.recipe import DistillRecipe
from hfx_plugins.distill.student import make_student
from hfx_plugins.distill.trainer import DistillationTrainer

__all__ = [
    "DistillConfig",
    "DistillRecipe",
    "DistillationObjective",
    "DistillationTrainer",
    "cache_teacher_outputs",
    "make_student",
    "plugin",
]

plugin = Plugin(
    name="distill",
    description="Knowledge distillation into a shallower student (DistillationTrainer, make_student)",
    config_cls=DistillConfig,
    apply=apply,
    recipe=DistillRecipe,
    checks=checks,
    save=save,
    load=load,
    can_load=can_load,
    presets_dir=Path(__file__).parent / "configs",
)
