"""Packaging: every plugin folder is an installed package, and no top-level `plugins` package exists."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed() -> None:
    # setuptools is given an explicit list (the plugins/ folder is mapped to hfx_plugins); a folder
    # missing from it would be absent from a wheel. Expected: every folder with an __init__.py.
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hfx").rglob("__init__.py")}
    found |= {
        ".".join(("hfx_plugins", *p.parent.relative_to(ROOT / "plugins").parts)).rstrip(".")
        for p in (ROOT / "plugins").rglob("__init__.py")
    }
    found = {f for f in found if "__pycache__" not in f}
    assert found == listed, f"pyproject packages differ: missing {found - listed}, extra {listed - found}"


def test_every_plugin_package_has_an_entry_point() -> None:
    # A folder whose __init__.py builds no Plugin is a library several plugins share: no entry point.
    eps = _pyproject()["project"]["entry-points"]["hfx.plugins"]
    folders = {p.parent.name for p in (ROOT / "plugins").glob("*/__init__.py") if "plugin = Plugin(" in p.read_text()}
    assert folders == set(eps), "each plugins/<name>/ with a Plugin registers as entry point <name>, and only those"
    assert all(v == f"hfx_plugins.{k}:plugin" for k, v in eps.items())


def test_no_top_level_plugins_package_is_importable_from_site() -> None:
    spec = importlib.util.find_spec("hfx_plugins")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).parent == ROOT / "plugins"
    assert "plugins" not in _pyproject()["tool"]["setuptools"]["packages"]
