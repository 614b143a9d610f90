"""The plugin contract and its registry.

A plugin is a :class:`Plugin` object exposed through the ``hfx.plugins`` entry-point group. The built-in
plugins (``plugins/<name>/``, installed as ``hfx_plugins.<name>``) use exactly that path, so a third-party
package adds a plugin by declaring, in its ``pyproject.toml``::

    [project.entry-points."hfx.plugins"]
    mine = "my_package.hfx_plugin:plugin"

Discovery is lazy: nothing is imported until a plugin is first asked for, and a plugin's heavy parts
(``apply``, ``recipe``, ``checks``, ``save``, ``load``, ``can_load``) are imported on first use, so that
listing plugins and checking a config never imports torch.

A plugin laid out in the standard anatomy (README.md, "Adding a plugin") gives its package and lets the
registry find each part by file name; a part it does not have is declared absent with ``None``::

    plugin = Plugin(name="mine", package=__name__, description="...", config_cls=MineConfig,
                    recipe="MineRecipe", checks=None)   # apply.py:apply, io.py:save/load/can_load, configs/

Any other layout gives each part as a callable or as ``lazy("module:attribute")``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfx.errors import HfxError, did_you_mean

if TYPE_CHECKING:
    from torch import nn

    from hfx.validate import Check

__all__ = [
    "ANATOMY",
    "BY_CONVENTION",
    "ENTRY_POINT_GROUP",
    "Lazy",
    "Plugin",
    "Recipe",
    "available",
    "export_names",
    "get",
    "iter_plugins",
    "lazy",
    "lazy_exports",
    "reset",
    "resolve",
]

ENTRY_POINT_GROUP = "hfx.plugins"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Lazy:
    """A callable that stands for ``module:attribute`` and imports it on first use.

    ``Plugin(apply=lazy("my_pkg.apply:apply"))`` keeps ``import my_pkg`` (so ``hfx plugins`` and every config
    error) free of torch: the module is imported when the plugin is first applied, run, validated or saved.
    """

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise HfxError(f"lazy target {target!r} must look like 'package.module:attribute'")
        self.target = target
        self._obj: Any = None

    def resolve(self) -> Any:
        """Import the module and return the attribute (cached).

        Raises:
            HfxError: the module cannot be imported or lacks the attribute.
        """
        if self._obj is None:
            module, _, attr = self.target.partition(":")
            try:
                self._obj = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                raise HfxError(f"cannot load {self.target!r}: {type(err).__name__}: {err}; "
                               "reinstall the package that provides it") from err
        return self._obj

    @property
    def __module__(self) -> str:  # type: ignore[override]
        return self.target.partition(":")[0]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Import the target (first call only) and call it with the same arguments."""
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"


def lazy(target: str) -> Lazy:
    """Wrap ``"package.module:attribute"`` so that it is imported on first call (see :class:`Lazy`)."""
    return Lazy(target)


def resolve(part: Any) -> Any:
    """The object behind a plugin part: the imported attribute of a :class:`Lazy`, anything else as given."""
    return part.resolve() if isinstance(part, Lazy) else part


def lazy_exports(package: str, exports: Mapping[str, str | Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports each public name from its submodule on first access.

    ``exports`` maps each submodule (``".model"``: the file ``model.py`` beside the ``__init__.py``) to the
    public names it defines, so that ``import hfx_plugins.lora`` stays light while
    ``from hfx_plugins.lora import disable_adapters`` works; :func:`export_names` derives ``__all__`` from the
    same table::

        _EXPORTS = {".model": ("disable_adapters", "set_adapter")}
        __getattr__ = lazy_exports(__name__, _EXPORTS)
        __all__ = ["LoraConfig", "plugin", *export_names(_EXPORTS)]

    The form ``{name: "absolute.module"}`` (one entry per name) is accepted too.
    """
    where: dict[str, str] = {}
    for key, value in exports.items():
        if isinstance(value, str):  # {name: module}
            where[key] = importlib.util.resolve_name(value, package)
        else:  # {module: (name, ...)}
            where.update(dict.fromkeys(value, importlib.util.resolve_name(key, package)))  # '.x': x.py beside

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def export_names(exports: Mapping[str, str | Sequence[str]]) -> list[str]:
    """The public names of a :func:`lazy_exports` table, sorted: ``__all__ = ["Eager", *export_names(_EXPORTS)]``
    writes each lazily loaded name once (static tools still see the names imported at the top)."""
    return sorted(n for key, value in exports.items() for n in ([key] if isinstance(value, str) else value))


class Recipe:
    """What ``hfx run`` does for a plugin: one linear script split into four steps.

    ``Recipe(ctx)``, ``ctx`` a :class:`hfx.runner.context.RunContext` (resolved config, run folder, accelerator,
    ``ctx.apply_plugins(model)``). The runner calls ``setup()``, ``evaluate()`` (before), ``train()``,
    ``evaluate()`` (after) and ``save()``, then prints the metrics side by side. Subclassing is optional.
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def setup(self) -> None:
        """Load the model and data, apply the plugins, build the optimizer. Raise HfxError on bad input."""
        raise NotImplementedError

    def train(self) -> dict[str, float]:
        """Train; return final training metrics (e.g. ``{"train_loss": ...}``).

        A recipe that builds a comparison instead of training (quant's error tables, icl's prompt settings)
        defines ``compare() -> dict[str, float]``, which the runner calls in this step's place.
        """
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Evaluate the current model; return metrics (e.g. ``{"accuracy": ...}``)."""
        raise NotImplementedError

    def save(self, out_dir: Path) -> list[Path]:
        """Write artifacts (HF formats) under ``out_dir``; return the paths written."""
        raise NotImplementedError

    @property
    def total_steps(self) -> int:
        """The step at which the after-training evaluation is logged: ``train.max_steps``, unless a recipe counts
        its steps otherwise (PPO counts updates)."""
        return int(self.ctx.run.train.max_steps)


class _ByConvention:
    """The default of a part of :class:`Plugin`: found in the plugin's package by its file name (see ANATOMY)."""

    def __repr__(self) -> str:
        return "BY_CONVENTION"


BY_CONVENTION: Any = _ByConvention()

# The standard anatomy: where a Plugin with a ``package`` finds each part it leaves BY_CONVENTION.
ANATOMY: dict[str, str] = {
    "apply": "apply:apply",
    "recipe": "recipe:{recipe}",
    "checks": "checks:checks",
    "save": "io:save",
    "load": "io:load",
    "can_load": "io:can_load",
}


@dataclass(frozen=True)
class Plugin:
    """Everything hfx needs to know about one plugin.

    Attributes:
        name: Lower-case identifier; also the plugin's config key (``lora.r``) and its CLI name.
        description: One line shown by ``hfx plugins``.
        config_cls: A dataclass whose every field has a type, a default and a docstring (the help text):
            the method's own fields, named as the reference library names them. It is what
            :func:`hfx.apply` accepts, and it must import without torch.
        run_config_cls: Optional subclass of ``config_cls`` adding the fields only ``hfx run`` uses (data,
            evaluation, merge-on-save, tables). ``hfx run`` types the plugin's section with it; :func:`hfx.apply`
            refuses its extra fields by name.
        package: The plugin's package (``__name__`` in its ``__init__.py``) when it follows the standard anatomy:
            every part left ``BY_CONVENTION`` is then read, on first use, from the file :data:`ANATOMY` names
            (``apply`` from ``apply.py``, ``save``/``load``/``can_load`` from ``io.py``, ...), and presets from
            ``configs/``. Without a package, a part left ``BY_CONVENTION`` is absent (``None``).
        requires: Names of plugins this one builds on (qat converts to quant's layers). It may import only
            their public names (``__all__`` of ``hfx_plugins.<name>``); a missing one is an error at load time.
        record_once: ``save`` writes every application of this plugin at once (several named LoRA adapters), so
            the model's record keeps only the latest entry instead of one per call.
        apply: ``apply(model, cfg) -> model``, the drop-in transformation used by :func:`hfx.apply`; ``None``:
            the plugin changes no model through :func:`hfx.apply` (no ``apply.py``).
        apply_inputs: Keyword arguments of :func:`hfx.apply` that are data for ``apply``, not config fields
            (quant's GPTQ ``calibration`` batches): passed as ``apply(model, cfg, **inputs)``, never stored in
            the config nor saved.
        recipe: The class ``hfx run`` drives for this plugin (see :class:`Recipe`); with ``package``, the name of
            that class in ``recipe.py`` (``"LoraRecipe"``).
        checks: Returns the reference checks run by ``hfx validate``; ``None``: no ``checks.py``.
        save: ``save(model, path)`` writes what this plugin added, in the reference library's format;
            ``None``: the plugin writes nothing (no ``io.py``), and ``load``/``can_load`` are then ``None`` too.
        load: ``load(model, path) -> (model, cfg)`` restores what :attr:`save` wrote onto a base model and
            returns the config it read.
        can_load: ``can_load(path) -> bool``: whether ``path`` holds this plugin's format.
        presets_dir: Folder of YAML presets (``default.yaml`` is loaded by ``hfx run``; ``preset=NAME``
            picks ``NAME.yaml``); with ``package``, ``configs/`` beside its ``__init__.py``.

    Raises:
        HfxError: an invalid name, a config class that is not a dataclass, a run config class that does not
            subclass it, or a ``recipe`` name given without ``package``.
    """

    name: str
    description: str
    config_cls: type
    run_config_cls: type | None = None
    package: str | None = None
    requires: tuple[str, ...] = ()
    record_once: bool = False
    apply: Callable[..., nn.Module] | None = BY_CONVENTION
    apply_inputs: tuple[str, ...] = ()
    recipe: type | str | None = None
    checks: Callable[[], list[Check]] | None = BY_CONVENTION
    save: Callable[[nn.Module, Path], None] | None = BY_CONVENTION
    load: Callable[[nn.Module, Path], tuple[nn.Module, Any]] | None = BY_CONVENTION
    can_load: Callable[[Path], bool] | None = BY_CONVENTION
    presets_dir: Path | None = BY_CONVENTION

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise HfxError(f"plugin name {self.name!r} is invalid: use lower case letters, digits and '_' "
                           "(it becomes a config key)")
        if not dataclasses.is_dataclass(self.config_cls):
            raise HfxError(f"plugin {self.name!r}: config_cls must be a dataclass, got {self.config_cls!r}")
        run = self.run_config_cls
        if run is not None and not (dataclasses.is_dataclass(run) and issubclass(run, self.config_cls)):
            raise HfxError(f"plugin {self.name!r}: run_config_cls must be a dataclass subclassing config_cls "
                           f"({self.config_cls.__name__}), got {run!r}")
        if isinstance(self.recipe, str) and self.package is None:
            raise HfxError(f"plugin {self.name!r}: recipe={self.recipe!r} names a class of recipe.py, which needs "
                           "package=__name__; otherwise give the class or lazy('module:Class')")
        if self.save is None:  # no io.py: nothing to load either
            for part in ("load", "can_load"):
                if getattr(self, part) is BY_CONVENTION:
                    object.__setattr__(self, part, None)
        for part, where in ANATOMY.items():
            value = getattr(self, part)
            if value is BY_CONVENTION or (part == "recipe" and isinstance(value, str)):
                target = where.format(recipe=value) if part == "recipe" else where
                object.__setattr__(self, part, lazy(f"{self.package}.{target}") if self.package else None)
        if self.presets_dir is BY_CONVENTION:
            object.__setattr__(self, "presets_dir", _package_dir(self.package) / "configs" if self.package else None)

    @property
    def section_cls(self) -> type:
        """The dataclass that types this plugin's section of an ``hfx run`` config."""
        return self.run_config_cls or self.config_cls

    def run_only_fields(self) -> list[str]:
        """Names of the fields that only ``hfx run`` uses (in ``run_config_cls`` but not ``config_cls``)."""
        if self.run_config_cls is None:
            return []
        own = {f.name for f in dataclasses.fields(self.config_cls)}
        return [f.name for f in dataclasses.fields(self.run_config_cls) if f.name not in own]

    def make_config(self, **fields: Any) -> Any:
        """Build this plugin's :attr:`config_cls` from keyword arguments (what :func:`hfx.apply` takes).

        Raises:
            HfxError: a field only ``hfx run`` uses, an unknown field (with the nearest name), or a value of
                the wrong type.
        """
        from hfx.config.schema import build_dataclass

        run_only = [name for name in fields if name in self.run_only_fields()]
        if run_only:
            raise HfxError(f"{self.name}.{run_only[0]} is a field of `hfx run` (the {self.name}: section of a run "
                           f"config), not of hfx.apply({self.name!r}); drop it here and set it on the command line "
                           f"as {self.name}.{run_only[0]}=...")
        return build_dataclass(self.config_cls, fields, prefix=self.name)


def _package_dir(package: str) -> Path:
    """The folder of ``package``, without importing it again (it is usually the one being imported)."""
    module = sys.modules.get(package)
    if module is not None and getattr(module, "__file__", None):
        return Path(module.__file__).parent  # type: ignore[arg-type]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HfxError(f"package {package!r} is not an importable package; give presets_dir= explicitly")
    return Path(next(iter(spec.submodule_search_locations)))


_cache: dict[str, Plugin] = {}
_entry_points: dict[str, EntryPoint] | None = None


def _discover() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in found and found[ep.name].value != ep.value:
                raise HfxError(f"two installed packages register the plugin {ep.name!r} ({found[ep.name].value} "
                               f"and {ep.value}); uninstall one of them")
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
    """Load the plugin called ``name``.

    Raises:
        HfxError: an unknown name (listing the installed ones and the nearest match), an entry point that
            fails to import or holds something other than a :class:`Plugin`, or a plugin it ``requires``
            that is not installed.
    """
    if name in _cache:
        return _cache[name]
    eps = _discover()
    if name not in eps:
        raise HfxError(f"unknown plugin {name!r}{did_you_mean(name, eps)}; installed plugins: {', '.join(sorted(eps))}")
    try:
        obj = eps[name].load()
    except Exception as err:  # a broken third-party package: one line, not a traceback (HFX_DEBUG=1 shows it)
        raise HfxError(
            f"cannot load plugin {name!r} from entry point {eps[name].value!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}; reinstall or uninstall the package that provides it"
        ) from err
    plugin = obj() if callable(obj) and not isinstance(obj, Plugin) else obj
    if not isinstance(plugin, Plugin):
        raise HfxError(f"entry point {eps[name].value!r} for plugin {name!r} gave {type(plugin).__name__}, "
                       "expected an hfx.registry.Plugin")
    if plugin.name != name:
        raise HfxError(f"entry point {name!r} ({eps[name].value}) holds a plugin named {plugin.name!r}; "
                       "the entry-point name and Plugin.name must agree")
    missing = [dep for dep in plugin.requires if dep not in eps]
    if missing:
        raise HfxError(f"plugin {name!r} builds on the plugin(s) {', '.join(missing)}, which are not installed; "
                       "install the package that provides them")
    _cache[name] = plugin
    return plugin


def iter_plugins() -> list[Plugin]:
    """Every installed plugin, loaded, sorted by name."""
    return [get(n) for n in available()]
