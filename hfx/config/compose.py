"""Compose the config of one ``hfx run`` from defaults, presets, a file and command-line overrides.

Layers, each overriding the one before:

1. the typed defaults: :class:`hfx.config.run.RunConfig` plus one section per plugin (``lora: LoraConfig``);
2. each plugin's preset, in plugin order: ``<plugin>/configs/<preset>.yaml`` (``preset=default``);
   a plugin the driver ``requires`` joins the run before it when the driver's preset sets its section
   (ppo's sets ``lora:``, so ``hfx run plugin=ppo`` is ``plugin=[lora,ppo]``; see :func:`_joined`);
3. ``--config FILE`` (a YAML file with the same shape);
4. the overrides, in Hydra's grammar, parsed by Hydra's own parser: ``key=value``, ``a.b=[1,2]``,
   ``+key=value`` (add a key that does not exist, e.g. an entry of a dict field), ``++key=value`` (add or
   change), ``~key`` (reset a field to its default, or remove a dict entry).

Every layer is type-checked against the dataclasses; an unknown key gets the nearest existing one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from hfx import registry
from hfx.config.run import RunConfig
from hfx.config.schema import omegaconf_error, to_dataclass
from hfx.config.text import as_text, keep_yaml_text, override_value
from hfx.errors import HfxError

__all__ = ["Composed", "compose", "compose_run", "parse_overrides", "plugin_names", "typed"]


def parse_overrides(args: list[str]) -> list[Override]:
    """Parse ``key=value`` arguments with Hydra's own override parser (hydra-core's grammar).

    Args:
        args: Command-line overrides such as ``lora.r=16``, ``+data.x=1``, ``~train.warmup_steps``.

    Returns:
        Hydra ``Override`` objects, in order.

    Raises:
        HfxError: an argument that is not ``key=value`` (nor ``~key``), does not parse, or is a sweep
            (``a=1,2``) or an ``@package`` override, which ``hfx run`` does not support.
    """
    parser = OverridesParser.create()
    parsed: list[Override] = []
    for arg in args:
        if "=" not in arg and not arg.startswith("~"):
            # The hint repeats the argument only when it is one printable word (the message stays one line).
            hint = f"`model={arg}` or `plugin={arg}`" if arg.isprintable() and arg.split() == [arg] else "`key=value`"
            raise HfxError(f"argument {arg!r} is not key=value; write e.g. {hint}")
        try:
            (ov,) = parser.parse_overrides([arg])
        except HydraException as err:
            first = str(err).splitlines()
            # Hydra's first line is the reason ("mismatched input '=' expecting <EOF>"); the last is a link.
            raise HfxError(f"cannot parse override {arg!r}: {first[0]}") from err
        if ov.is_sweep_override() or ov.package is not None:
            raise HfxError(f"override {arg!r}: sweeps and @package are not supported by hfx run; give one value")
        parsed.append(ov)
    return parsed


def plugin_names(overrides: list[Override], file_cfg: DictConfig | None = None) -> list[str]:
    """The plugin list, from ``plugin=`` on the command line, else from the config file.

    Args:
        overrides: Parsed command-line overrides (:func:`parse_overrides`).
        file_cfg: The ``--config`` file's content, if any (its ``plugin:`` key).

    Returns:
        Plugin names in the order they are applied (``plugin=[quant,lora]`` gives ``["quant", "lora"]``).

    Raises:
        HfxError: no plugin given, a value that is not a name or list of names, or a name given twice.
    """
    value: Any = None
    if file_cfg is not None and "plugin" in file_cfg:
        value = OmegaConf.to_container(file_cfg)["plugin"]  # type: ignore[index]
    for ov in overrides:
        if ov.key_or_group == "plugin" and ov.type != OverrideType.DEL:
            value = ov.value()
    if value is None or value == []:
        raise HfxError(f"no plugin given; add plugin=NAME (installed: {', '.join(registry.available())})")
    names = list(value) if isinstance(value, (list, tuple)) else [value]
    for name in names:
        if not isinstance(name, str):
            raise HfxError(f"plugin must be a name or a list of names, got {value!r}")
    if len(set(names)) != len(names):
        raise HfxError(f"plugin list {names} names a plugin twice; each may appear once")
    return names


def _schema(plugins: list[registry.Plugin]) -> DictConfig:
    run_keys = [f.name for f in dataclasses.fields(RunConfig)]
    for plugin in plugins:
        if plugin.name in run_keys:
            raise HfxError(f"plugin {plugin.name!r} has the name of a run setting ({plugin.name}=...); "
                           "rename the plugin's entry point")
    # One dataclass for the whole run, so each plugin section is typed like `data` and `train`: replacing it
    # wholesale (`finetune={...}`, `finetune=null`) is checked instead of silently dropping its schema.
    schema = dataclasses.make_dataclass(
        "HfxRunConfig",
        [(p.name, p.section_cls, dataclasses.field(default_factory=p.section_cls)) for p in plugins],
        bases=(RunConfig,),
    )
    cfg = OmegaConf.structured(schema)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _merge(cfg: DictConfig, layer: Any, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise omegaconf_error(err, cfg, where) from err


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise HfxError(f"config file {str(path)!r} does not exist; give the path of a YAML file")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends: report them as one line
        raise HfxError(f"cannot read config file {str(path)!r}: {str(err).splitlines()[0]}") from err
    if not isinstance(loaded, DictConfig):
        raise HfxError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return loaded


def _apply_override(cfg: DictConfig, ov: Override, defaults: DictConfig) -> None:
    key, arg = ov.key_or_group, ov.input_line
    try:
        if ov.type == OverrideType.DEL:
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if parent is None or leaf not in parent:
                raise HfxError(f"cannot remove {key!r} ({arg}): no such key")
            default = OmegaConf.select(defaults, key, default="__missing__")
            if default != "__missing__":  # a typed field: back to its default
                OmegaConf.update(cfg, key, default, merge=False)
            else:  # an entry of a dict field
                with open_dict(parent):
                    del parent[leaf]
            return
        exists = OmegaConf.select(cfg, key, default="__missing__") != "__missing__"
        if ov.type == OverrideType.ADD and exists:
            raise HfxError(f"{arg}: {key!r} already exists; use {key}=... to change it or ++{key}=... to force")
        if ov.type == OverrideType.CHANGE and not exists:
            OmegaConf.update(cfg, key, ov.value(), merge=False)  # raises ConfigKeyError -> nearest key
        elif ov.type in (OverrideType.ADD, OverrideType.FORCE_ADD):
            parent_key = key.rpartition(".")[0]
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if parent is None:
                raise HfxError(f"{arg}: {parent_key!r} does not exist")
            if dataclasses.is_dataclass(OmegaConf.get_type(parent)) and key.rpartition(".")[2] not in parent:
                where = parent_key or "the top level"
                raise HfxError(f"{arg}: {where} is a typed section with fixed keys; only dict fields take new keys "
                               "(`hfx config` lists the keys)")
            with open_dict(parent):
                OmegaConf.update(cfg, key, override_value(cfg, key, ov), merge=False, force_add=True)
        else:
            OmegaConf.update(cfg, key, override_value(cfg, key, ov), merge=False)
    except OmegaConfBaseException as err:
        raise omegaconf_error(err, cfg, f"override {arg!r}") from err


def _joined(plugins: list[registry.Plugin], preset: str) -> list[registry.Plugin]:
    """The plugins that join the run before the driver: those it ``requires`` whose section its preset sets.

    ppo requires lora and its preset sets ``lora:`` (the policy's adapter), so ``hfx run plugin=ppo`` runs
    ``[lora, ppo]`` and ``lora.r=8`` is the one way to set the policy's rank. A joined plugin's own preset is not
    loaded (it configures that plugin's own runs); the driver's preset sets its section.
    """
    driver, named = plugins[-1], {p.name for p in plugins}
    path = driver.presets_dir / f"{preset}.yaml" if driver.presets_dir else None
    if path is None or not path.is_file():
        return []
    keys = set(_load_yaml(path).keys())
    return [registry.get(n) for n in driver.requires if n in keys and n not in named]


@dataclasses.dataclass(frozen=True)
class Composed:
    """One run's config, composed and validated once (:func:`compose_run`); ``hfx run`` passes it on to the runner.

    Attributes:
        cfg: The resolved config as a struct-mode OmegaConf node (``cfg.plugin`` is the list of names).
        plugins: The loaded :class:`hfx.registry.Plugin` objects, in order.
        run: The run-level sections as dataclasses (:class:`hfx.config.run.RunConfig`).
        plugin_cfgs: Each plugin's config dataclass (its ``section_cls``), by plugin name.
    """

    cfg: DictConfig
    plugins: list[registry.Plugin]
    run: RunConfig
    plugin_cfgs: dict[str, Any]


def compose(args: list[str], config_file: str | None = None) -> tuple[DictConfig, list[registry.Plugin]]:
    """:func:`compose_run`'s config and plugins (``hfx config`` and tests, which need no dataclasses)."""
    composed = compose_run(args, config_file)
    return composed.cfg, composed.plugins


def compose_run(args: list[str], config_file: str | None = None) -> Composed:
    """Build the resolved run config and validate it, once: as OmegaConf and as dataclasses.

    The layers, each overriding the one before (see the module docstring): typed defaults, each plugin's
    preset, ``config_file``, then ``args``. Every dataclass ``__post_init__`` check runs before returning
    (:func:`typed`, called exactly once here), so a config error ends the command before any model or run
    folder exists, and the runner reuses the dataclasses instead of building them again.

    Args:
        args: Command-line overrides in Hydra's grammar.
        config_file: Path of a YAML file with the same shape as the config, or None.

    Returns:
        The config, its plugins and its dataclasses (:class:`Composed`).

    Raises:
        HfxError: any input mistake: an unknown plugin or preset, a missing or unreadable config file, a
            malformed override, an unknown key (with the nearest one) or a wrong value.
    """
    overrides = parse_overrides(args)
    file_cfg = _load_yaml(Path(config_file)) if config_file else None
    plugins = [registry.get(n) for n in plugin_names(overrides, file_cfg)]
    preset = next((as_text(ov) for ov in overrides if ov.key_or_group == "preset"), None)
    if preset is None and file_cfg is not None and "preset" in file_cfg:
        preset = str(file_cfg.preset)
    preset = preset or "default"
    joined = _joined(plugins, preset)
    plugins = [*joined, *plugins]
    cfg = _schema(plugins)
    defaults = cfg.copy()
    found_preset = preset == "default"
    for plugin in plugins:
        path = plugin.presets_dir / f"{preset}.yaml" if plugin.presets_dir and plugin not in joined else None
        if path is not None and path.is_file():
            cfg = _merge(cfg, keep_yaml_text(cfg, _load_yaml(path), path), f"preset {path}")
            found_preset = True
    if not found_preset:
        names = sorted({p.stem for pl in plugins if pl.presets_dir for p in pl.presets_dir.glob("*.yaml")})
        raise HfxError(f"no plugin of {[p.name for p in plugins]} has a preset {preset!r}; presets: {', '.join(names)}")
    if file_cfg is not None:
        if "plugin" in file_cfg:  # `plugin: name` or a list, already resolved above
            file_cfg = file_cfg.copy()
            del file_cfg["plugin"]  # not pop(): that resolves the value, and `${x}` may not resolve
        cfg = _merge(cfg, keep_yaml_text(cfg, file_cfg, Path(config_file)), f"config file {config_file}")
    for ov in overrides:
        if ov.key_or_group != "plugin":  # already resolved above (a name or a list of names)
            _apply_override(cfg, ov, defaults)
    cfg.plugin = [p.name for p in plugins]
    run, plugin_cfgs = typed(cfg, plugins)  # every __post_init__ check runs now, before any model or run folder
    return Composed(cfg, plugins, run, plugin_cfgs)


def typed(cfg: DictConfig, plugins: list[registry.Plugin]) -> tuple[RunConfig, dict[str, Any]]:
    """The run config as dataclasses: ``(RunConfig, {plugin name: plugin config})``.

    Args:
        cfg: A config built by :func:`compose`.
        plugins: The plugins it names.

    Raises:
        HfxError: a value rejected by a dataclass's type or ``__post_init__`` check.
    """
    names = {p.name for p in plugins}
    run_node = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k not in names])
    run_node = _merge(OmegaConf.structured(RunConfig), run_node, "run config")
    return to_dataclass(run_node), {p.name: to_dataclass(cfg[p.name]) for p in plugins}
