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

from hfx.registry import Plugin, export_names, lazy_exports
from hfx_plugins.distill.config import DistillConfig, DistillRunConfig

_EXPORTS = {  # module beside this file -> the public names it defines, imported on first use
    ".cache": ("cache_teacher_outputs",),
    ".losses": ("kd_loss",),
    ".objective": ("DistillationObjective",),
    ".recipe": ("DistillRecipe",),
    ".student": ("make_student",),
    ".trainer": ("DistillationTrainer",),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DistillConfig", "DistillRunConfig", "plugin", *export_names(_EXPORTS)]

plugin = Plugin(name="distill", package=__name__, config_cls=DistillConfig, run_config_cls=DistillRunConfig,
                recipe="DistillRecipe", apply=None,  # the student is a new model (make_student): no hfx.apply
                description="Knowledge distillation into a shallower student: hfx.make_student(teacher), "
                            "hfx.DistillationTrainer")
