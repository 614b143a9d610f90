"""``hfx.apply(teacher, "distill", layers=[0, 2, 4])``: the student to distil into, built from the teacher."""

from __future__ import annotations

from torch import nn

from hfx.errors import HfxError
from hfx_plugins.distill.config import DistillConfig
from hfx_plugins.distill.student import make_student

__all__ = ["apply"]


def apply(model: nn.Module, cfg: DistillConfig) -> nn.Module:
    """Return a new student that keeps ``cfg.layers`` of ``model`` (default every other one); ``model`` is unchanged.

    Train it with :class:`~hfx_plugins.distill.trainer.DistillationTrainer` and ``model`` as the teacher.
    ``cfg.student`` (a separate model) is a setting of ``hfx run``, which loads that model itself.
    """
    if cfg.student:
        raise HfxError("distill.student names a model for `hfx run`; with hfx.apply, pass layers=[...] or load "
                       "the student yourself and give both to DistillationTrainer")
    return make_student(model, layers=cfg.layers or None)  # type: ignore[arg-type]
