"""Values as typed: a ``str`` field keeps its text, a ``bool`` field takes only true or false.

Hydra's override grammar and YAML both read ``2024_01`` as the integer 202401, ``1e3`` as 1000.0 and
``true`` as a bool; OmegaConf then turns those back into *other* text (``'202401'``, ``'1000.0'``,
``'True'``) for a ``str`` field. Here the text the user wrote is used instead whenever the declared type
of the target is ``str`` (or ``list[str]`` / ``dict[str, str]`` entries), whatever the text looks like.
A ``bool`` field refuses anything but a bool (OmegaConf would read ``resume=2`` or ``yes`` as true), and
OmegaConf itself refuses a float or a bool for an ``int`` field: a value of the wrong type is an error,
never a silent conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf._utils import get_yaml_loader

from hfx.errors import HfxError

__all__ = ["as_text", "declared_type", "keep_yaml_text", "override_value"]

_SCALARS = (int, float, bool)
_SPECIAL = set("'\"[]{}\\")


def as_text(ov: Override) -> str:
    """The value of ``key=value`` as written: Hydra's string if it parsed one, else the raw text."""
    value = ov.value()
    if isinstance(value, str):
        return value
    return (ov.input_line or "").partition("=")[2].strip()


def declared_type(cfg: DictConfig, key: str) -> Any:
    """The type the schema declares for dotted ``key``: a class, ``list[...]``/``dict[...]`` or None if unknown."""
    parent_key, _, leaf = key.rpartition(".")
    try:
        parent = OmegaConf.select(cfg, parent_key, throw_on_missing=False) if parent_key else cfg
    except Exception:  # an interpolation or a bad key along the way: OmegaConf reports it when setting
        return None
    if not isinstance(parent, DictConfig):
        return None
    if leaf in parent:
        node = parent._get_node(leaf)
        if isinstance(node, ListConfig):
            return list[node._metadata.element_type]  # type: ignore[name-defined]
        if isinstance(node, DictConfig):
            return dict[str, node._metadata.element_type] if not node._is_none() else None  # type: ignore[name-defined]
        return node._metadata.ref_type  # type: ignore[union-attr]
    return parent._metadata.element_type  # a new entry of a dict field


def _element_texts(text: str, n: int) -> list[str] | None:
    """The raw elements of a flat ``[a,b,c]`` (no quotes, brackets or escapes inside), else None."""
    if not (text.startswith("[") and text.endswith("]")) or _SPECIAL & set(text[1:-1]):
        return None
    parts = [p.strip() for p in text[1:-1].split(",")] if text[1:-1].strip() else []
    return parts if len(parts) == n else None


def override_value(cfg: DictConfig, key: str, ov: Override) -> Any:
    """The value to set for override ``ov`` on ``key``: the typed text for str targets, checked bools.

    Raises:
        HfxError: a ``bool`` field given something other than true/false.
    """
    value, tp = ov.value(), declared_type(cfg, key)
    text = (ov.input_line or "").partition("=")[2].strip()
    if tp is str and isinstance(value, _SCALARS):
        return text  # 2024_01, 1e3, true: exactly as typed
    if tp is bool and value is not None and not isinstance(value, bool):
        raise HfxError(f"wrong value for {key!r} in override {ov.input_line!r}: expected a bool (true or false), "
                       f"got {text!r}")
    if tp == list[str] and isinstance(value, list) and any(isinstance(v, _SCALARS) for v in value):
        raw = _element_texts(text, len(value))
        if raw is not None:
            return [r if isinstance(v, _SCALARS) else v for v, r in zip(value, raw, strict=True)]
    return value


def _raw_scalars(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _raw_scalars(v, (*path, k.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _raw_scalars(v, (*path, i), out)
    elif isinstance(node, yaml.ScalarNode) and node.style is None:  # plain, unquoted: YAML may have retyped it
        out[path] = node.value


def keep_yaml_text(schema: DictConfig, layer: DictConfig, path: Path) -> DictConfig:
    """Put back the text of the plain YAML scalars of ``path`` that land on ``str`` fields of ``schema``."""
    raw: dict[tuple[Any, ...], str] = {}
    try:
        _raw_scalars(yaml.compose(path.read_text(), Loader=get_yaml_loader()), (), raw)
    except yaml.YAMLError:
        return layer  # OmegaConf.load read it, so this does not happen; keep its values if it does
    _restore(schema, layer, raw, ())
    return layer


def _restore(schema: Any, layer: DictConfig, raw: dict[tuple[Any, ...], str], path: tuple[Any, ...]) -> None:
    for key in list(layer.keys()):
        where = (*path, key)
        node = layer._get_node(key)
        target = schema._get_node(key) if isinstance(schema, DictConfig) and key in schema else None
        if isinstance(node, DictConfig) and isinstance(target, DictConfig):
            _restore(target, node, raw, where)
        elif isinstance(node, ListConfig) and isinstance(target, ListConfig) and target._metadata.element_type is str:
            for i in range(len(node)):
                if isinstance(node._get_node(i)._value(), _SCALARS) and (*where, i) in raw:  # type: ignore[union-attr]
                    node[i] = raw[(*where, i)]
        elif target is not None and not isinstance(target, (DictConfig, ListConfig)) and target._metadata.ref_type is str:
            if isinstance(node._value(), _SCALARS) and where in raw:  # type: ignore[union-attr]
                layer[key] = raw[where]
