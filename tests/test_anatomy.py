"""The plugin anatomy, checked on the source (Python's ``ast``; nothing is imported).

- A plugin never reaches into another plugin: in ``plugins/<a>/``, ``from hfx_plugins.<b>.<module> import``,
  ``import hfx_plugins.<b>.<module>``, ``from hfx_plugins import <b>``, a relative import into ``<b>``, or a
  ``lazy("hfx_plugins.<b>.<module>:...")`` / ``import_module("hfx_plugins.<b>.<module>")`` string are errors;
  ``from hfx_plugins.<b> import X`` is allowed when ``X`` is in ``__all__`` of ``plugins/<b>/__init__.py``,
  and then ``<a>`` must declare ``requires=("<b>", ...)`` on its ``Plugin``. Using ``<b>`` through the core
  counts too: ``hfx.<name>`` for a name ``hfx/__init__.py`` takes from ``hfx_plugins.<b>`` (``hfx.embed``),
  ``hfx.apply(model, "<b>")`` or ``registry.get("<b>")``.
- A folder under plugins/ whose ``__init__.py`` builds no ``Plugin`` is a shared library (no entry point):
  plugins may import its ``__all__`` without declaring it; it imports no plugin.
- ``hfx/__init__.py`` re-exports only plugins' public names, never their internals.
- The record of applied plugins on a model is written only by ``hfx/protocols.py`` (``record``/``forget``):
  anywhere else in hfx/, plugins/, benchmarks/ and scripts/, ``object.__setattr__(m, "hfx_plugins", ...)``,
  ``setattr(m, "hfx_plugins", ...)``, ``m.hfx_plugins = ...``, ``m.hfx_plugins.append(...)``,
  ``del m.hfx_plugins`` and any use of ``hfx.api._record`` are errors.
- No ``.py`` file in hfx/ or plugins/ is longer than 400 lines.
- The standard anatomy (hfx.registry.ANATOMY, README.md "Adding a plugin"): every plugin folder has
  config.py, recipe.py (defining the class its ``recipe=`` names), README.md and configs/; each optional part
  is where the convention puts it exactly when the ``Plugin`` declares it: ``apply.py`` defining ``apply``
  unless ``apply=None``, ``checks.py`` defining ``checks`` unless ``checks=None``, ``io.py`` defining
  ``save``/``load``/``can_load`` unless ``save=None``; a part declared absent has no file.

The rules come from hfx.registry.Plugin (``requires``, ``package``), hfx.protocols (the record) and the layout
in README.md ("Where things live"); each test lists every offender.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
PACKAGES = sorted(p.parent.name for p in PLUGINS.glob("*/__init__.py"))
PLUGIN_NAMES = [n for n in PACKAGES if "plugin = Plugin(" in (PLUGINS / n / "__init__.py").read_text()]
LIBRARIES = [n for n in PACKAGES if n not in PLUGIN_NAMES]  # shared code of several plugins (no Plugin)
# part of a Plugin -> (file, the name that file must define) under the standard anatomy (hfx.registry.ANATOMY)
PARTS = {"apply": ("apply.py", "apply"), "checks": ("checks.py", "checks"), "save": ("io.py", "save"),
         "load": ("io.py", "load"), "can_load": ("io.py", "can_load")}
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


def _exports_table(value: ast.expr) -> set[str]:
    """The names of a ``lazy_exports`` table literal: ``{".module": ("name", ...)}`` or ``{"name": "module"}``."""
    names: set[str] = set()
    if isinstance(value, ast.Dict):
        for key, item in zip(value.keys, value.values, strict=True):
            if isinstance(item, (ast.Tuple, ast.List)):
                names |= {e.value for e in item.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
    return names


def public_names(plugin: str) -> set[str]:
    """``__all__`` of ``plugins/<plugin>/__init__.py``, read from its AST (empty when absent).

    ``*export_names(_EXPORTS)`` (hfx.registry) and ``*_EXPORTS`` in the list stand for the names of that table.
    """
    names: set[str] = set()
    tables: dict[str, set[str]] = {}
    for node in _tree(PLUGINS / plugin / "__init__.py").body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id != "__all__":
                tables[t.id] = _exports_table(node.value)  # type: ignore[union-attr]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value  # type: ignore[union-attr]
            if isinstance(value, (ast.List, ast.Tuple)):
                for e in value.elts:
                    if isinstance(e, ast.Constant) and isinstance(e.value, str):
                        names.add(e.value)
                    elif isinstance(e, ast.Starred):
                        names |= set().union(*(tables.get(n.id, set()) for n in ast.walk(e.value)
                                               if isinstance(n, ast.Name)))
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


def core_reexports() -> dict[str, str]:
    """The names ``hfx/__init__.py`` loads from a plugin (``hfx.embed`` -> ``"embed"``), from its ``_LAZY`` table."""
    found: dict[str, str] = {}
    for node in _tree(ROOT / "hfx" / "__init__.py").body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_LAZY" for t in node.targets):
            for key, value in zip(node.value.keys, node.value.values, strict=True):  # type: ignore[attr-defined]
                module = str(value.value).split(".")  # type: ignore[attr-defined]
                if module[0] == "hfx_plugins":
                    found[str(key.value)] = ".".join(module[1:])  # type: ignore[union-attr]
    return found


def _uses_through_core(node: ast.AST, plugin: str, reexports: dict[str, str]) -> str | None:
    """The plugin ``node`` uses through hfx's core (``hfx.embed``, ``hfx.apply(m, "b")``, ``registry.get("b")``)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "hfx":
        return reexports.get(node.attr)
    if isinstance(node, ast.ImportFrom) and node.module == "hfx" and node.level == 0:
        return next((reexports[a.name] for a in node.names if a.name in reexports), None)
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        index = 1 if name == "apply" and owner in ("hfx", "api") else 0 if (name, owner) == ("get", "registry") else None
        if index is not None and len(node.args) > index and isinstance(node.args[index], ast.Constant):
            other = node.args[index].value
            return other if other in PLUGIN_NAMES and other != plugin else None
    return None


def cross_plugin_imports(plugin: str) -> tuple[list[str], set[str]]:
    """Offending imports in ``plugins/<plugin>/`` and the plugins it uses (their public names or through hfx).

    Shared libraries under plugins/ are imported by their ``__all__`` like a plugin, but are not counted as used.
    """
    bad: list[str] = []
    used: set[str] = set()
    reexports = core_reexports()
    for path in _py_files(f"plugins/{plugin}"):
        where = path.relative_to(ROOT)
        for node in ast.walk(_tree(path)):
            at = f"{where}:{getattr(node, 'lineno', '?')}"
            through_core = _uses_through_core(node, plugin, reexports)
            if through_core is not None and through_core != plugin:
                used.add(through_core)
            if isinstance(node, ast.ImportFrom):
                parts = _absolute(node.module, node.level, path).split(".")
                if parts[0] != "hfx_plugins":
                    continue
                if len(parts) == 1:  # from hfx_plugins import <b>
                    bad += [f"{at}: from hfx_plugins import {a.name}" for a in node.names if a.name != plugin]
                elif parts[1] != plugin and len(parts) > 2:
                    bad.append(f"{at}: from {'.'.join(parts)} import ... (internals of {parts[1]!r})")
                elif parts[1] != plugin:
                    public = public_names(parts[1]) if (PLUGINS / parts[1] / "__init__.py").is_file() else set()
                    private = [a.name for a in node.names if a.name not in public]
                    bad += [f"{at}: {name!r} is not in hfx_plugins.{parts[1]}.__all__" for name in private]
                    if parts[1] not in LIBRARIES:
                        used.add(parts[1])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "hfx_plugins" and len(parts) > 2 and parts[1] != plugin:
                        bad.append(f"{at}: import {alias.name} (internals of {parts[1]!r})")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "lazy", "import_module", "Lazy"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        parts = arg.value.partition(":")[0].split(".")
                        if parts[0] == "hfx_plugins" and len(parts) > 1 and parts[1] != plugin:
                            bad.append(f"{at}: {arg.value!r} names {parts[1]!r}'s module")
    return bad, used


@pytest.mark.parametrize("plugin", PLUGIN_NAMES)
def test_plugin_imports_only_public_names_of_other_plugins(plugin: str) -> None:
    bad, used = cross_plugin_imports(plugin)
    assert not bad, f"plugin {plugin!r} reaches into other plugins:\n" + "\n".join(bad)
    undeclared = used - declared_requires(plugin)
    assert not undeclared, (f"plugin {plugin!r} uses {sorted(undeclared)} without "
                            f"Plugin(requires=({', '.join(repr(u) for u in sorted(undeclared))},))")


@pytest.mark.parametrize("library", LIBRARIES)
def test_shared_library_imports_no_plugin(library: str) -> None:
    bad, used = cross_plugin_imports(library)
    assert not bad and not used, (f"plugins/{library}/ (a library: no Plugin) must not use plugins:\n"
                                  + "\n".join(bad + [f"uses plugin {u!r}" for u in sorted(used)]))


def test_core_reexports_only_public_names_of_plugins() -> None:
    reexports = core_reexports()
    assert {"embed", "make_student", "RewardTrainer"} <= set(reexports), reexports  # the table was read
    bad = [f"hfx.{name} from hfx_plugins.{where}" for name, where in reexports.items()
           if where not in PLUGIN_NAMES or name not in public_names(where)]
    assert not bad, "hfx/__init__.py must take these from a plugin's __all__:\n" + "\n".join(bad)


def test_undeclared_use_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: each way of using another plugin, in a scratch plugin, is counted as a use."""
    scratch = tmp_path / "plugins" / "scratch"
    scratch.mkdir(parents=True)
    (scratch / "__init__.py").write_text("plugin = Plugin(name='scratch')\n")
    forms = {"embed": "import hfx\nhfx.embed('minilm')\n", "lora": "from hfx import api\napi.apply(m, 'lora')\n",
             "reward": "from hfx import registry\nregistry.get('reward')\n", "distill": "from hfx import make_student\n",
             "quant": "from hfx_plugins.quant import QuantConfig\n"}
    for i, code in enumerate(forms.values()):
        (scratch / f"m{i}.py").write_text(code)
    for name, value in {"ROOT": tmp_path, "PLUGINS": tmp_path / "plugins"}.items():
        monkeypatch.setitem(globals(), name, value)
    (tmp_path / "hfx").mkdir()
    (tmp_path / "hfx" / "__init__.py").write_text((Path(__file__).resolve().parents[1] / "hfx" / "__init__.py").read_text())
    for other in forms:
        (tmp_path / "plugins" / other).mkdir()
        (tmp_path / "plugins" / other / "__init__.py").write_text('__all__ = ["QuantConfig"]\n')
    monkeypatch.setitem(globals(), "PLUGIN_NAMES", ["scratch", *forms])
    bad, used = cross_plugin_imports("scratch")
    assert not bad and used == set(forms), (bad, used)


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


def _defines(path: Path, name: str) -> bool:
    """Whether ``path`` defines ``name`` at module level (def, class, assignment or import)."""
    for node in _tree(path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def anatomy_errors(plugin: str) -> list[str]:
    """How ``plugins/<plugin>/`` departs from the anatomy its ``Plugin(...)`` declares (see the module docstring)."""
    folder = PLUGINS / plugin
    call = _plugin_call(plugin)
    if call is None:
        return [f"plugins/{plugin}/__init__.py builds no Plugin(...)"]
    errors = [f"lacks {name}" for name in ("config.py", "recipe.py", "README.md", "configs") if not (folder / name).exists()]
    package = _keyword(call, "package")
    if not (isinstance(package, ast.Name) and package.id == "__name__"):
        errors.append("Plugin(...) does not give package=__name__ (the standard anatomy)")
    recipe = _keyword(call, "recipe")
    if not (isinstance(recipe, ast.Constant) and isinstance(recipe.value, str)):
        errors.append("Plugin(recipe=...) does not name its class in recipe.py")
    elif (folder / "recipe.py").exists() and not _defines(folder / "recipe.py", recipe.value):
        errors.append(f"recipe.py defines no {recipe.value}")
    declared_none = {part for part in PARTS if isinstance(_keyword(call, part), ast.Constant)
                     and _keyword(call, part).value is None}  # type: ignore[union-attr]
    if "save" in declared_none:
        declared_none |= {"load", "can_load"}  # save=None: no io.py at all (hfx.registry.Plugin)
    for part, (file, name) in PARTS.items():
        value, path = _keyword(call, part), folder / file
        if part in declared_none:
            if path.exists() and not any(PARTS[p][0] == file for p in PARTS if p not in declared_none):
                errors.append(f"has {file} but its Plugin declares {part}=None")
        elif value is not None:  # given explicitly: a lazy("...") string must point where the convention does
            target = value.args[0].value if isinstance(value, ast.Call) and value.args else None  # type: ignore[union-attr]
            if target != f"hfx_plugins.{plugin}.{file[:-3]}:{name}":
                errors.append(f"{part}= is given as {ast.unparse(value)}, not by convention ({file}:{name})")
        elif not path.is_file():
            errors.append(f"lacks {file} ({part}), which its Plugin declares (say {part}=None if it has none)")
        elif not _defines(path, name):
            errors.append(f"{file} defines no {name!r} ({part})")
    return errors


@pytest.mark.parametrize("plugin", PLUGIN_NAMES)
def test_plugin_folder_has_the_declared_anatomy(plugin: str) -> None:
    errors = anatomy_errors(plugin)
    assert not errors, f"plugins/{plugin}/: " + "; ".join(errors)


def test_anatomy_check_catches_each_departure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself, on scratch plugins: a declared part missing, an undeclared one present, a wrong name."""
    monkeypatch.setitem(globals(), "PLUGINS", tmp_path)
    base = ("config.py", "README.md", "configs")

    def make(name: str, decl: str, files: dict[str, str]) -> list[str]:
        (tmp_path / name).mkdir()
        for f in base:
            (tmp_path / name / f).mkdir() if f == "configs" else (tmp_path / name / f).write_text("")
        (tmp_path / name / "__init__.py").write_text(f"plugin = Plugin(name={name!r}, package=__name__, {decl})\n")
        for f, code in files.items():
            (tmp_path / name / f).write_text(code)
        return anatomy_errors(name)

    recipe = {"recipe.py": "class R: ...\n"}
    io = {"io.py": "def save(): ...\ndef load(): ...\ndef can_load(): ...\n"}
    full = {**recipe, **io, "apply.py": "def apply(): ...\n", "checks.py": "def checks(): ...\n"}
    assert make("complete", 'recipe="R"', full) == []
    assert make("none", 'recipe="R", apply=None, checks=None, save=None', recipe) == []
    assert make("lacks", 'recipe="R"', recipe) == [
        "lacks apply.py (apply), which its Plugin declares (say apply=None if it has none)",
        "lacks checks.py (checks), which its Plugin declares (say checks=None if it has none)",
        *[f"lacks io.py ({p}), which its Plugin declares (say {p}=None if it has none)" for p in ("save", "load", "can_load")]]
    assert make("extra", 'recipe="R", apply=None, checks=None, save=None', full) == [
        "has apply.py but its Plugin declares apply=None", "has checks.py but its Plugin declares checks=None",
        *[f"has io.py but its Plugin declares {p}=None" for p in ("save", "load", "can_load")]]
    assert make("wrong", 'recipe="Other"', {**full, "apply.py": "def other(): ...\n"}) == [
        "recipe.py defines no Other", "apply.py defines no 'apply' (apply)"]
