"""``make_student``: a smaller copy of the teacher that keeps a subset of its layers, or one built from a config.

DistilBERT (Sanh et al. 2019, Sec. 3) initialises the student "from the teacher by taking one layer out of
two": same width, same embeddings and head, half the depth. ``make_student(teacher)`` does exactly that
(layers 0, 2, 4, ... of every layer stack: an encoder's, a decoder's, or both stacks of an encoder-decoder);
``layers=[...]`` keeps any other subset, in the given order.

The student is a deep copy of the teacher with each stack replaced by the chosen layers, so it is the same
transformers class, saves with ``save_pretrained`` and loads with ``from_pretrained`` (its config's layer
count is updated). Two details a plain copy gets wrong, handled here:

- attention modules carry ``layer_idx``, their slot in the KV cache; kept layers are renumbered 0..n-1, or
  ``generate()`` would index a cache of n layers with the teacher's indices;
- T5 keeps its relative position bias in layer 0 only, so a T5 student must keep layer 0.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from hfx.errors import HfxError
from hfx.protocols import record
from hfx_plugins.distill.config import DistillConfig

__all__ = ["LAYER_KEYS", "layer_stacks", "make_student", "param_count"]

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers")
"""Config attributes that hold a layer count, across transformers architectures."""


def param_count(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _configs(config: PretrainedConfig) -> list[PretrainedConfig]:
    """``config`` and its nested sub-configs (EncoderDecoderModel's encoder/decoder, multimodal text_config)."""
    out = [config]
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            out += _configs(value)
    return out


def layer_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The outermost ModuleLists of identical blocks whose length is a layer count of the model's config.

    Returns:
        ``(dotted path, ModuleList)`` pairs: one for an encoder or decoder, two for an encoder-decoder.

    Raises:
        HfxError: no such list (an architecture whose layers are not held in one ModuleList).
    """
    counts = {getattr(c, k) for c in _configs(model.config) for k in LAYER_KEYS if isinstance(getattr(c, k, None), int)}
    stacks: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) not in counts or len(module) == 0:
            continue
        if len({type(m) for m in module}) != 1:
            continue  # e.g. T5's per-block [self-attention, feed-forward] list
        if any(name.startswith(f"{outer}.") for outer, _ in stacks):
            continue  # a list inside a block, not a stack of blocks
        stacks.append((name, module))
    if not stacks:
        raise HfxError(f"cannot find the layer stack of {type(model).__name__}; build the student from a config instead")
    return stacks


def _check_layers(layers: Sequence[int], stacks: list[tuple[str, nn.ModuleList]]) -> list[int]:
    layers = [int(i) for i in layers]
    if not layers:
        raise HfxError("layers is empty; keep at least one teacher layer, e.g. layers=[0, 2, 4]")
    if len(set(layers)) != len(layers):
        raise HfxError(f"layers {layers} repeats a layer; list each teacher layer at most once")
    for name, stack in stacks:
        bad = [i for i in layers if not 0 <= i < len(stack)]
        if bad:
            raise HfxError(f"layers {bad} do not exist in {name} ({len(stack)} layers, 0..{len(stack) - 1}); pick "
                           "layers of this model (distill.layers=[...]), or none for every other layer")
        has_bias = any(getattr(m, "has_relative_attention_bias", False) for m in stack[0].modules())
        if has_bias and 0 not in layers:
            raise HfxError(f"{name}: layer 0 holds the relative position bias (T5 family); include layer 0 in layers")
    return layers


def _renumber(block: nn.Module, index: int) -> None:
    """Give every attention module of ``block`` its new slot in the KV cache."""
    for m in block.modules():
        if isinstance(getattr(m, "layer_idx", None), int):
            m.layer_idx = index


def _from_layers(teacher: PreTrainedModel, layers: Sequence[int] | None) -> tuple[PreTrainedModel, list[int]]:
    stacks = layer_stacks(teacher)
    n = len(stacks[0][1])
    layers = _check_layers(range(0, n, 2) if layers is None else layers, stacks)
    student = copy.deepcopy(teacher)
    for name, _ in layer_stacks(student):
        parent_name, _, attr = name.rpartition(".")
        parent = student.get_submodule(parent_name) if parent_name else student
        old = getattr(parent, attr)
        new = nn.ModuleList([old[i] for i in layers])
        for j, block in enumerate(new):
            _renumber(block, j)
        setattr(parent, attr, new)
    old_counts = {len(s) for _, s in stacks}
    for cfg in _configs(student.config):
        for key in LAYER_KEYS:
            if getattr(cfg, key, None) in old_counts:
                setattr(cfg, key, len(layers))
        types = getattr(cfg, "layer_types", None)  # per-layer attention kinds (sliding/full) in newer configs
        if isinstance(types, list) and len(types) in old_counts:
            cfg.layer_types = [types[i] for i in layers]
    return student, layers


def make_student(
    teacher: PreTrainedModel,
    layers: Sequence[int] | None = None,
    config: PretrainedConfig | dict[str, Any] | None = None,
) -> PreTrainedModel:
    """A student for ``teacher``: its layers ``layers`` (default every other one), or a fresh model from ``config``.

    Distillation's entry point in Python (``hfx.make_student``): the student is a new model, so distill has no
    ``hfx.apply``. The student records ``("distill", DistillConfig(layers=kept))`` (:mod:`hfx.protocols`), so
    ``hfx.save(student, path)`` writes a transformers folder plus that config, and ``hfx.load(teacher, path)``
    reads it back.

    Args:
        teacher: A transformers model (any head). It is not modified.
        layers: Teacher layer indices to keep, in order; None keeps 0, 2, 4, ... (DistilBERT's initialisation).
        config: Instead of layers: a config (or a dict of overrides of the teacher's config, e.g.
            ``{"num_hidden_layers": 2, "hidden_size": 128}``) for a randomly initialised student of the
            teacher's class. Its vocabulary must be the teacher's.

    Returns:
        The student: the teacher's class, with its layer counts in the config updated; every weight trains.

    Raises:
        HfxError: both ``layers`` and ``config``; layers that are empty, repeated or out of range (or a T5
            student without layer 0); no layer stack found; a config override the config lacks, or another
            vocabulary size.
    """
    if config is not None and layers is not None:
        raise HfxError("give make_student either layers=... or config=..., not both")
    kept: list[int] = []
    if config is None:
        student, kept = _from_layers(teacher, layers)
    else:
        if isinstance(config, dict):
            base = copy.deepcopy(teacher.config)
            for key, value in config.items():
                if not hasattr(base, key):
                    raise HfxError(f"config override {key!r} is not an attribute of {type(base).__name__}")
                setattr(base, key, value)
            config = base
        if getattr(config, "vocab_size", None) != getattr(teacher.config, "vocab_size", None):
            raise HfxError(f"student vocab_size {getattr(config, 'vocab_size', None)} differs from the teacher's "
                           f"{getattr(teacher.config, 'vocab_size', None)}; distillation needs the teacher's tokenizer")
        student = type(teacher)(config)
    student.train(teacher.training)
    student.requires_grad_(True)  # a student trains every weight, even if the teacher was frozen first
    warn_if_larger(student, teacher)
    record(student, "distill", DistillConfig(layers=kept), replace=True)  # kept = [] for a config-built student
    return student


def warn_if_larger(student: nn.Module, teacher: nn.Module) -> None:
    """Warn (not fail) when the student has more parameters than its teacher: legal, but rarely intended."""
    s, t = param_count(student), param_count(teacher)
    if s > t:
        warnings.warn(f"the student has {s:,} parameters, more than its teacher's {t:,}; distillation usually "
                      "makes a smaller model (check layers/config)", UserWarning, stacklevel=3)
