"""Save and load a distilled student: a complete transformers model folder, plus what made it.

The student is the teacher's class with fewer layers (its config says how many), so ``save_pretrained``
writes a folder that ``AutoModel*.from_pretrained`` loads without hfx; ``hfx_distill.json`` beside it
records the distillation config (the :class:`DistillConfig` fields: what ``hfx run`` alone uses is left out).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hfx.errors import HfxError
from hfx.io import config_marker, has_config_marker, read_config_marker, write_config_marker
from hfx_plugins.distill.config import DistillConfig

__all__ = ["MARKER", "can_load", "load", "save"]

MARKER = config_marker("distill")


def can_load(path: Path) -> bool:
    """Whether ``path`` was written by :func:`save` (it holds ``hfx_distill.json``)."""
    return has_config_marker(path, "distill")


def save(model: nn.Module, path: Path, cfg: DistillConfig | None = None) -> None:
    """Write the student with ``save_pretrained`` (safetensors) and the distillation config.

    Args:
        model: The student (a transformers model).
        path: Folder to write (created if missing).
        cfg: The config to record; default: the one :func:`~hfx_plugins.distill.student.make_student` recorded.

    Raises:
        HfxError: ``model`` is not a transformers model.
    """
    from hfx.protocols import config_of

    if not hasattr(model, "save_pretrained"):
        raise HfxError(f"cannot save {type(model).__name__}: the student must be a transformers model")
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    cfg = cfg or config_of(model, "distill") or DistillConfig()
    write_config_marker(path, "distill", cfg, DistillConfig)  # a run config's extra fields left out


def load(model: nn.Module, path: Path) -> tuple[nn.Module, DistillConfig]:
    """Load the student saved at ``path`` as ``model``'s class; ``model`` (the teacher) supplies class and vocabulary.

    Raises:
        HfxError: the student's vocabulary differs from ``model``'s (not the teacher it was distilled from).
    """
    path = Path(path)
    cfg, _ = read_config_marker(path, "distill", DistillConfig)
    student = type(model).from_pretrained(path, use_safetensors=True)
    ours, theirs = student.get_input_embeddings().num_embeddings, model.get_input_embeddings().num_embeddings
    if ours != theirs:
        raise HfxError(f"the student in {path} has a vocabulary of {ours} tokens, the given base model {theirs}; "
                       "load it onto the teacher it was distilled from")
    return student, cfg
