"""hfx.io's config marker: the ``hfx_<plugin>.json`` a plugin writes beside its saved weights.

Expected file contents are written out by hand below: the two layouts (the fields alone; ``{"config": fields,
**extra}``) are the ones earlier hfx versions wrote, so folders saved by them still load.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hfx.errors import HfxError
from hfx.io import config_marker, has_config_marker, read_config_marker, write_config_marker


@dataclass
class Method:
    bits: int = 4
    sym: bool = True
    layers: list[int] = field(default_factory=list)


@dataclass
class MethodRun(Method):
    table: str = "only for hfx run"


def test_fields_of_the_method_class_only(tmp_path: Path) -> None:
    write_config_marker(tmp_path, "demo", MethodRun(bits=8, layers=[1, 2]), Method)
    assert config_marker("demo") == "hfx_demo.json" and has_config_marker(tmp_path, "demo")
    assert json.loads((tmp_path / "hfx_demo.json").read_text()) == {"bits": 8, "sym": True, "layers": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["hfx_demo.json"]  # no temporary file left behind
    cfg, rest = read_config_marker(tmp_path, "demo", Method)
    assert cfg == Method(bits=8, layers=[1, 2]) and rest == {}


def test_extra_entries_nest_the_config(tmp_path: Path) -> None:
    write_config_marker(tmp_path, "demo", Method(), shift=0.5, tied={"a": "b"})
    data = json.loads((tmp_path / "hfx_demo.json").read_text())
    assert data == {"config": {"bits": 4, "sym": True, "layers": []}, "shift": 0.5, "tied": {"a": "b"}}
    cfg, rest = read_config_marker(tmp_path, "demo", Method)
    assert cfg == Method() and rest == {"shift": 0.5, "tied": {"a": "b"}}


@pytest.mark.parametrize("nested", [False, True])
def test_earlier_files_renamed_and_unknown_keys(tmp_path: Path, nested: bool) -> None:
    fields = {"bits": 3, "symmetric": False, "table": "x", "gone": 1}  # an older version's names and fields
    (tmp_path / "hfx_demo.json").write_text(json.dumps({"config": fields, "n": 1} if nested else fields))
    cfg, rest = read_config_marker(tmp_path, "demo", Method, renamed={"symmetric": "sym"})
    assert cfg == Method(bits=3, sym=False) and rest == ({"n": 1} if nested else {})


def test_missing_or_damaged_marker_is_one_line(tmp_path: Path) -> None:
    assert not has_config_marker(tmp_path, "demo")
    with pytest.raises(HfxError, match="has no hfx_demo.json: it was not written by hfx.save with the demo plugin"):
        read_config_marker(tmp_path, "demo", Method)
    (tmp_path / "hfx_demo.json").write_text('{"bits": 4')
    with pytest.raises(HfxError, match="is not valid JSON"):
        read_config_marker(tmp_path, "demo", Method)
    (tmp_path / "hfx_demo.json").write_text("[4]")
    with pytest.raises(HfxError, match="holds list, not a JSON object"):
        read_config_marker(tmp_path, "demo", Method)


@pytest.mark.parametrize("plugin", ["finetune", "reward", "embed", "quant", "distill", "qat"])
def test_plugin_file_names_unchanged(plugin: str) -> None:
    # the names earlier versions wrote, literally: a saved folder from them must still be recognised
    expected = {"finetune": "hfx_finetune.json", "reward": "hfx_reward.json", "embed": "hfx_embed.json",
                "quant": "hfx_quant.json", "distill": "hfx_distill.json", "qat": "hfx_qat.json"}[plugin]
    assert importlib.import_module(f"hfx_plugins.{plugin}.io").MARKER == expected
