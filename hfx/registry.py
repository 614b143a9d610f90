"""The plugin contract and its registry.

A plugin is a :class:`Plugin` object exposed through the ``hfx.plugins`` entry-point group. The built-in
plugins (``plugins/<name>/``, installed as ``hfx_plugins.<name>``) use exactly that path, so a third-party
package adds a plugin by declaring, in its ``pyproject.toml``::

    [project.entry-points."hfx.plugins"]
    mine = "my_package.hfx_plugin:plugin"

Discovery is lazy: nothing is imported until a plugin is first asked for.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfx.errors import HfxError, did_you_mean

if TYPE_CHECKING:
    from torch import nn

    from hfx.validate import Check

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "Recipe", "available", "get", "iter_plugins", "reset"]

ENTRY_POINT_GROUP = "hfx.plugins"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Recipe:
    """What ``hfx run`` does for a plugin: one linear script split into four steps.

    A recipe is built with ``Recipe(ctx)`` where ``ctx`` is a :class:`hfx.runner.context.RunContext` (resolved
    config, run folder, accelerator, and ``ctx.apply_plugins(model)`` to apply every plugin of the run in
    order). The runner calls ``setup()``, ``evaluate()`` (before), ``train()``, ``evaluate()`` (after) and
    ``save()``, then prints the returned metrics side by side. Subclassing is optional: any class with these
    four methods works.
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def setup(self) -> None:
        """Load the model and data, apply the plugins, build the optimizer. Raise HfxError on bad input."""
        raise NotImplementedError

    def train(self) -> dict[str, float]:
        """Train; return final training metrics (e.g. ``{"train_loss": ...}``)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Evaluate the current model; return metrics (e.g. ``{"accuracy": ...}``)."""
        raise NotImplementedError

    def save(self, out_dir: Path) -> list[Path]:
        """Write artifacts (HF formats) under ``out_dir``; return the paths written."""
        raise NotImplementedError


@dataclass(frozen=True)
class Plugin:
    """Everything hfx needs to know about one plugin.

    Attributes:
        name: Lower-case identifier; also the plugin's config key (``lora.r``) and its CLI name.
        description: One line shown by ``hfx plugins``.
        config_cls: A dataclass whose every field has a type, a default and a docstring (the help text).
        apply: ``apply(model, cfg) -> model``, the drop-in transformation used by :func:`hfx.apply`.
        apply_inputs: Keyword arguments of :func:`hfx.apply` that are data for ``apply``, not config fields
            (quant's GPTQ ``calibration`` batches): passed as ``apply(model, cfg, **inputs)``, never stored in
            the config nor saved.
        recipe: The class ``hfx run`` drives for this plugin (see :class:`Recipe`).
        checks: Returns the reference checks run by ``hfx validate``.
        save: ``save(model, path)`` writes what this plugin added, in the reference library's format.
        load: ``load(model, path) -> (model, cfg)`` restores what :attr:`save` wrote onto a base model and
            returns the config it read.
        can_load: ``can_load(path) -> bool``: whether ``path`` holds this plugin's format.
        presets_dir: Folder of YAML presets (``default.yaml`` is loaded by ``hfx run``; ``preset=NAME``
            picks ``NAME.yaml``).
    """

    name: str
    description: str
    config_cls: type
    apply: Callable[..., nn.Module] | None = None
    apply_inputs: tuple[str, ...] = ()
    recipe: type | None = None
    checks: Callable[[], list[Check]] | None = None
    save: Callable[[nn.Module, Path], None] | None = None
    load: Callable[[nn.Module, Path], tuple[nn.Module, Any]] | None = None
    can_load: Callable[[Path], bool] | None = None
    presets_dir: Path | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise HfxError(
                f"plugin name {self.name!r} is invalid: use lower case letters, digits and '_' "
                "(it becomes a config key)"
            )
        if not dataclasses.is_dataclass(self.config_cls):
            raise HfxError(f"plugin {self.name!r}: config_cls must be a dataclass, got {self.config_cls!r}")

    def make_config(self, **fields: Any) -> Any:
        """Build this plugin's config from keyword arguments, rejecting unknown names and wrong types."""
        from hfx.config.schema import build_dataclass

        return build_dataclass(self.config_cls, fields, prefix=self.name)


_cache: dict[str, Plugin] = {}
_entry_points: dict[str, EntryPoint] | None = None


def _discover() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in found and found[ep.name].value != ep.value:
                raise HfxError(
                    f"two installed packages register the plugin {ep.name!r} ({found[ep.name].value} and "
                    f"{ep.value}); uninstall one of them"
                )
            found[ep.name] = ep
        _entry_points = found
    return _entry_points


def reset() -> None:
    """Forget discovered plugins (tests use this after installing a fake distribution)."""
    global _entry_points
    _entry_points = None
    _cache.clear()


def available() -> list[str]:
    """Names of the installed plugins, sorted."""
    return sorted(_discover())


def get(name: str) -> Plugin:
    """Load the plugin called ``name``; an unknown name lists the installed ones and the nearest match."""
    if name in _cache:
        return _cache[name]
    eps = _discover()
    if name not in eps:
        raise HfxError(
            f"unknown plugin {name!r}{did_you_mean(name, eps)}; installed plugins: {', '.join(sorted(eps))}"
        )
    try:
        obj = eps[name].load()
    except Exception as err:  # a broken third-party package: one line, not a traceback (HFX_DEBUG=1 shows it)
        raise HfxError(
            f"cannot load plugin {name!r} from entry point {eps[name].value!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}; reinstall or uninstall the package that provides it"
        ) from err
    plugin = obj() if callable(obj) and not isinstance(obj, Plugin) else obj
    if not isinstance(plugin, Plugin):
        raise HfxError(
            f"entry point {eps[name].value!r} for plugin {name!r} gave {type(plugin).__name__}, "
            "expected an hfx.registry.Plugin"
        )
    if plugin.name != name:
        raise HfxError(
            f"entry point {name!r} ({eps[name].value}) holds a plugin named {plugin.name!r}; "
            "the entry-point name and Plugin.name must agree"
        )
    _cache[name] = plugin
    return plugin


def iter_plugins() -> list[Plugin]:
    """Every installed plugin, loaded, sorted by name."""
    return [get(n) for n in available()]
