"""Typed, documented config dataclasses: help text, validation, and OmegaConf conversion.

Every config field in hfx has a type, a default and a docstring written on the line after it (the litgpt
habit), e.g.::

    @dataclass
    class LoraConfig:
        r: int = 8
        \"\"\"Rank of the update B @ A.\"\"\"

:func:`field_docs` reads those strings back (they are not kept at run time by Python) so the CLI can show
them. A field may instead carry ``field(metadata={"help": ...})`` as peft's configs do.

OmegaConf supports ``int``, ``float``, ``bool``, ``str``, enums, ``list[...]``, ``dict[str, ...]``,
``Optional`` and ``Any``, but not unions such as ``str | list[str]``: annotate those ``Any`` and check the
value in the dataclass's ``__post_init__``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from hfx.errors import HfxError, did_you_mean

__all__ = ["build_dataclass", "describe", "field_docs", "flat_keys", "omegaconf_error", "to_dataclass"]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` (and its bases) to its help text.

    The text is the string literal written on the line after the field (read from the class's source with
    ``ast``, as litgpt's config help does), or ``field(metadata={"help": ...})`` as in peft's configs; a field
    with neither maps to nothing. Classes whose source is unavailable (built in a REPL) contribute nothing.

    Args:
        cls: A dataclass.

    Returns:
        ``{field name: help text on one line}``.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:] + [None], strict=False):
            is_doc = isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = str(f.metadata["help"])
    return docs


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def describe(cls: type, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """Yield ``(dotted key, type name, default, help)`` for every field, nested dataclasses flattened.

    Args:
        cls: A dataclass.
        prefix: Prepended to every key with a dot (a plugin's name: ``lora`` gives ``lora.r``).

    Yields:
        One tuple per leaf field, in declaration order; a field holding a dataclass yields its fields instead.
    """
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        if dataclasses.is_dataclass(default):
            yield from describe(type(default), key)
        else:
            yield key, _type_name(f.type), default, docs.get(f.name, "")


def flat_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of an OmegaConf node (used to suggest the nearest key)."""
    keys: list[str] = []
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            key = f"{prefix}.{k}" if prefix else str(k)
            keys.append(key)
            keys.extend(flat_keys(cfg._get_node(k), key))
    return keys


def omegaconf_error(err: OmegaConfBaseException, root: Any, where: str = "") -> HfxError:
    """Turn an OmegaConf error into one actionable line.

    Args:
        err: What OmegaConf raised.
        root: The config node the error happened in (its keys give the nearest-name hint).
        where: Which layer was being applied ("override 'lora.r=x'", "preset <path>"), for the message.

    Returns:
        The :class:`HfxError` to raise: an unknown key (with the nearest existing one), a wrong value, or any
        other OmegaConf complaint, each on one line.
    """
    key = err.full_key or ""
    src = f" in {where}" if where else ""
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        keys = flat_keys(root)
        moved = key.rpartition(".")[2].replace("_", ".", 1)  # ppo.lora_r -> lora.r: the field of another section
        hint = f" (did you mean '{moved}'?)" if moved in keys else did_you_mean(key, keys)
        return HfxError(f"unknown config key {key!r}{src}{hint}; `hfx config plugin=NAME` lists every key")
    if isinstance(err, ValidationError):
        return HfxError(f"wrong value for {key!r}{src}: {str(err).splitlines()[0]}")
    return HfxError(f"invalid config{src} at {key!r}: {str(err).splitlines()[0]}")


def to_dataclass(node: DictConfig) -> Any:
    """Turn a structured OmegaConf node back into its dataclass, running ``__post_init__`` checks.

    Raises:
        HfxError: OmegaConf rejected a value (see :func:`omegaconf_error`); a dataclass's ``__post_init__``
            raises its own HfxError unchanged.
    """
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as err:
        raise omegaconf_error(err, node) from err


def build_dataclass(cls: type, fields: Mapping[str, Any], prefix: str = "") -> Any:
    """Build ``cls(**fields)`` with OmegaConf's type checks and a nearest-name hint for unknown fields.

    Args:
        cls: The config dataclass.
        fields: Field values by name; the others keep their defaults.
        prefix: The section name used in messages (``lora`` gives ``lora.r``).

    Returns:
        The ``cls`` instance, its ``__post_init__`` checks passed.

    Raises:
        HfxError: an unknown field (with the nearest name and the list of fields), a value OmegaConf cannot
            convert to the field's type, or a ``__post_init__`` check.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    for name in fields:
        if name not in names:
            where = f"{prefix}." if prefix else ""
            raise HfxError(
                f"unknown config field {where}{name!r}{did_you_mean(name, names)}; "
                f"fields of {cls.__name__}: {', '.join(names)}"
            )
    node = OmegaConf.structured(cls)
    try:
        node = OmegaConf.merge(node, dict(fields))
    except OmegaConfBaseException as err:
        raise omegaconf_error(err, node, prefix) from err
    return to_dataclass(node)
