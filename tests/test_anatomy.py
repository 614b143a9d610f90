"""The plugin anatomy, checked on the source (Python's ``ast``; nothing is imported).

- A plugin never reaches into another plugin: in ``plugins/<a>/``, ``from hfx_plugins.<b>.<module> import``,
  ``import hfx_plugins.<b>.<module>``, ``from hfx_plugins import <b>``, a relative import into ``<b>``, or a
  ``lazy("hfx_plugins.<b>.<module>:...")`` / ``import_module("hfx_plugins.<b>.<module>")`` string are errors;
  ``from hfx_plugins.<b> import X`` is allowed when ``X`` is in ``__all__`` of ``plugins/<b>/__init__.py``,
  and then ``<a>`` must declare ``requires=("<b>", ...)`` on its ``Plugin``.
- The record of applied plugins on a model is written only by ``hfx/protocols.py`` (``record``/``forget``):
  anywhere else in hfx/, plugins/, benchmarks/ and scripts/, ``object.__setattr__(m, "hfx_plugins", ...)``,
  ``setattr(m, "hfx_plugins", ...)``, ``m.hfx_plugins = ...``, ``m.hfx_plugins.append(...)``,
  ``del m.hfx_plugins`` and any use of ``hfx.api._record`` are errors.
- No ``.py`` file in hfx/ or plugins/ is longer than 400 lines.
- Every plugin folder has config.py, recipe.py, README.md and configs/, and io.py when its Plugin saves
  (``save=`` given), with ``save``/``load``/``can_load`` pointing into that io module.

The rules come from hfx.registry.Plugin (``requires``), hfx.protocols (the record) and the layout in README.md
("Where things live"); each test lists every offender.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
PLUGIN_NAMES = sorted(p.parent.name for p in PLUGINS.glob("*/__init__.py"))
MAX_LINES = 400
RECORD_ATTR = "hfx_plugins"  # the attribute hfx.protocols keeps the applied-plugins record in
MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "__setitem__", "__delitem__"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _py_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def public_names(plugin: str) -> set[str]:
    """``__all__`` of ``plugins/<plugin>/__init__.py``, read from its AST (empty when absent)."""
    names: set[str] = set()
    for node in _tree(PLUGINS / plugin / "__init__.py").body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value  # type: ignore[union-attr]
            if isinstance(value, (ast.List, ast.Tuple)):
                names |= {e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return names


def _plugin_call(plugin: str) -> ast.Call | None:
    """The ``Plugin(...)`` call in ``plugins/<plugin>/__init__.py``."""
    for node in ast.walk(_tree(PLUGINS / plugin / "__init__.py")):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Plugin":
            return node
    return None


def _keyword(call: ast.Call | None, name: str) -> ast.expr | None:
    if call is None:
        return None
    return next((k.value for k in call.keywords if k.arg == name), None)


def declared_requires(plugin: str) -> set[str]:
    """The names in ``Plugin(requires=(...))`` of ``plugin``."""
    value = _keyword(_plugin_call(plugin), "requires")
    if isinstance(value, (ast.Tuple, ast.List)):
        return {e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def _absolute(module: str | None, level: int, path: Path) -> str:
    """The absolute module an import names, ``plugins/`` being the package ``hfx_plugins``."""
    if level == 0:
        return module or ""
    package = ["hfx_plugins", *path.parent.relative_to(PLUGINS).parts]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def cross_plugin_imports(plugin: str) -> tuple[list[str], set[str]]:
    """Offending imports in ``plugins/<plugin>/`` and the plugins whose public names it imports."""
    bad: list[str] = []
    used: set[str] = set()
    for path in _py_files(f"plugins/{plugin}"):
        where = path.relative_to(ROOT)
        for node in ast.walk(_tree(path)):
            at = f"{where}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom):
                parts = _absolute(node.module, node.level, path).split(".")
                if parts[0] != "hfx_plugins":
                    continue
                if len(parts) == 1:  # from hfx_plugins import <b>
                    bad += [f"{at}: from hfx_plugins import {a.name}" for a in node.names if a.name != plugin]
                elif parts[1] != plugin and len(parts) > 2:
                    bad.append(f"{at}: from {'.'.join(parts)} import ... (internals of plugin {parts[1]!r})")
                elif parts[1] != plugin:
                    public = public_names(parts[1]) if (PLUGINS / parts[1] / "__init__.py").is_file() else set()
                    private = [a.name for a in node.names if a.name not in public]
                    bad += [f"{at}: {name!r} is not in hfx_plugins.{parts[1]}.__all__" for name in private]
                    used.add(parts[1])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "hfx_plugins" and len(parts) > 2 and parts[1] != plugin:
                        bad.append(f"{at}: import {alias.name} (internals of plugin {parts[1]!r})")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "lazy", "import_module", "Lazy"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        parts = arg.value.partition(":")[0].split(".")
                        if parts[0] == "hfx_plugins" and len(parts) > 1 and parts[1] != plugin:
                            bad.append(f"{at}: {arg.value!r} names plugin {parts[1]!r}'s module")
    return bad, used


@pytest.mark.parametrize("plugin", PLUGIN_NAMES)
def test_plugin_imports_only_public_names_of_other_plugins(plugin: str) -> None:
    bad, used = cross_plugin_imports(plugin)
    assert not bad, f"plugin {plugin!r} reaches into other plugins:\n" + "\n".join(bad)
    undeclared = used - declared_requires(plugin)
    assert not undeclared, (f"plugin {plugin!r} imports from {sorted(undeclared)} without "
                            f"Plugin(requires=({', '.join(repr(u) for u in sorted(undeclared))},))")


def record_writes(path: Path) -> list[str]:
    """Every write of the applied-plugins record (or use of hfx.api._record) in ``path``."""
    bad: list[str] = []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(_tree(path)):
        at = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            args = node.args
            if name in ("__setattr__", "setattr", "delattr", "__delattr__") and any(
                    isinstance(a, ast.Constant) and a.value == RECORD_ATTR for a in args):
                bad.append(f"{at}: {name}(..., {RECORD_ATTR!r}, ...)")
            if (isinstance(func, ast.Attribute) and func.attr in MUTATORS and isinstance(func.value, ast.Attribute)
                    and func.value.attr == RECORD_ATTR):
                bad.append(f"{at}: .{RECORD_ATTR}.{func.attr}(...)")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute) and sub.attr == RECORD_ATTR:
                        bad.append(f"{at}: assigns or deletes .{RECORD_ATTR}")
        elif isinstance(node, ast.Attribute) and node.attr == "_record":
            if isinstance(node.value, ast.Attribute) and node.value.attr == "api" or (
                    isinstance(node.value, ast.Name) and node.value.id == "api"):
                bad.append(f"{at}: hfx.api._record")
        elif isinstance(node, ast.ImportFrom) and node.module == "hfx.api":
            bad += [f"{at}: from hfx.api import _record" for a in node.names if a.name == "_record"]
    return bad


def test_applied_plugins_record_is_written_only_by_hfx_protocols() -> None:
    protocols = ROOT / "hfx" / "protocols.py"
    bad = [line for path in _py_files("hfx", "plugins", "benchmarks", "scripts") if path != protocols
           for line in record_writes(path)]
    assert not bad, "use hfx.protocols.record/forget instead:\n" + "\n".join(bad)


def test_record_check_catches_each_form(tmp_path: Path) -> None:
    """The checker itself: each forbidden form in a scratch file is reported (one line each)."""
    sample = tmp_path / "sample.py"
    code = ("object.__setattr__(m, 'hfx_plugins', [])\nsetattr(m, 'hfx_plugins', [])\nm.hfx_plugins = []\n"
            "m.hfx_plugins.append(1)\ndel m.hfx_plugins\nhfx.api._record(m, 'x', c)\nfrom hfx.api import _record\n"
            "m.hfx_plugins_count = 1\nhfx.protocols.record(m, 'x', c)\n")
    sample.write_text(code)
    found = record_writes(sample)
    assert sorted(int(line.split(":")[1]) for line in found) == [1, 2, 3, 4, 5, 6, 7], found


def test_no_file_over_400_lines() -> None:
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in _py_files("hfx", "plugins")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"split these files (at most {MAX_LINES} lines):\n" + "\n".join(long)


@pytest.mark.parametrize("plugin", PLUGIN_NAMES)
def test_plugin_folder_has_the_standard_files(plugin: str) -> None:
    folder = PLUGINS / plugin
    required = ["config.py", "recipe.py", "README.md", "configs"]
    call = _plugin_call(plugin)
    assert call is not None, f"plugins/{plugin}/__init__.py builds no Plugin(...)"
    if _keyword(call, "save") is not None:
        required.append("io.py")
    missing = [name for name in required if not (folder / name).exists()]
    assert not missing, f"plugins/{plugin}/ lacks {', '.join(missing)}"
    for field in ("save", "load", "can_load"):
        value = _keyword(call, field)
        if isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Constant):
            module = str(value.args[0].value).partition(":")[0]
            assert module == f"hfx_plugins.{plugin}.io", f"plugin {plugin!r}: {field} comes from {module}, not its io.py"
