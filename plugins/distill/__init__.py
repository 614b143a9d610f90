"""``distill``: knowledge distillation of a teacher into a shallower student.

    student = hfx.make_student(teacher, layers=[0, 2, 4])   # a new model: distill has no hfx.apply
    trainer = hfx.DistillationTrainer(model=student, teacher_model=teacher, args=..., train_dataset=...)
    hfx.save(student, "out/student")        # a transformers folder (AutoModel*.from_pretrained loads it)

- :class:`DistillationTrainer`: a ``transformers.Trainer`` whose loss is alpha * T^2 * D(teacher, student) +
  (1 - alpha) * CE + an optional hidden-state cosine term, for classification, masked LM, causal LM, seq2seq
  and embedding regression, online or from a teacher cache (:func:`cache_teacher_outputs`);
- :func:`make_student`: every other teacher layer (DistilBERT's initialisation), any subset, or a config;
- ``hfx run plugin=distill``: minilm -> 3 layers (embeddings); ``preset=decoder``: smollm2-135m -> 15 layers.

Lives in ``plugins/distill/`` (installed as ``hfx_plugins.distill``); see its README.md. Importing this package
imports no torch: the public names below are loaded from their modules on first use.
"""

from pathlib import Path

from hfx.registry import Plugin, lazy, lazy_exports
from hfx_plugins.distill.config import DistillConfig, DistillRunConfig

_EXPORTS = {
    "DistillRecipe": "hfx_plugins.distill.recipe",
    "DistillationObjective": "hfx_plugins.distill.objective",
    "DistillationTrainer": "hfx_plugins.distill.trainer",
    "cache_teacher_outputs": "hfx_plugins.distill.cache",
    "kd_loss": "hfx_plugins.distill.losses",
    "make_student": "hfx_plugins.distill.student",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DistillConfig",
    "DistillRecipe",
    "DistillRunConfig",
    "DistillationObjective",
    "DistillationTrainer",
    "cache_teacher_outputs",
    "kd_loss",
    "make_student",
    "plugin",
]

plugin = Plugin(
    name="distill",
    description="Knowledge distillation into a shallower student: hfx.make_student(teacher), hfx.DistillationTrainer",
    config_cls=DistillConfig,
    run_config_cls=DistillRunConfig,
    recipe=lazy("hfx_plugins.distill.recipe:DistillRecipe"),
    checks=lazy("hfx_plugins.distill.checks:checks"),
    save=lazy("hfx_plugins.distill.io:save"),
    load=lazy("hfx_plugins.distill.io:load"),
    can_load=lazy("hfx_plugins.distill.io:can_load"),
    presets_dir=Path(__file__).parent / "configs",
)
