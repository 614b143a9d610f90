"""Plugin discovery through the ``hfx.plugins`` entry-point group, with the built-in plugin and a third-party one.

The third-party plugin is a package written by the test into ``tmp_path`` together with a fake installed
distribution (``<name>.dist-info/`` with ``METADATA`` and ``entry_points.txt``), which
``importlib.metadata`` finds on ``sys.path`` exactly as it finds a pip-installed package. Nothing is installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import hfx
from hfx import registry
from hfx.errors import HfxError

ECHO_SOURCE = textwrap.dedent('''
    """hfx_test_echo: a third-party hfx plugin written by tests/hfx/test_registry.py."""
    import json
    from dataclasses import dataclass

    import torch

    from hfx.registry import Plugin, Recipe

    CALLS = []  # the recipe steps, in the order the runner called them


    @dataclass
    class EchoConfig:
        """Fit y = target_slope * x with a 1-weight linear model."""

        target_slope: float = 2.0
        """Slope of the line the recipe fits."""
        points: int = 3
        """Number of evenly spaced x in [-1, 1]."""


    def apply(model, cfg):
        with torch.no_grad():
            model.weight.fill_(cfg.target_slope)
        return model


    class EchoRecipe(Recipe):
        def setup(self):
            CALLS.append("setup")
            cfg = self.ctx.config("echo")
            self.x = torch.linspace(-1.0, 1.0, cfg.points).unsqueeze(1)
            self.y = cfg.target_slope * self.x
            self.model = torch.nn.Linear(1, 1, bias=False)
            torch.nn.init.zeros_(self.model.weight)
            self.opt = torch.optim.SGD(self.model.parameters(), lr=self.ctx.run.train.learning_rate)

        def _loss(self):
            return ((self.model(self.x) - self.y) ** 2).mean()

        def evaluate(self):
            CALLS.append("evaluate")
            with torch.no_grad():
                return {"mse": self._loss().item()}

        def train(self):
            CALLS.append("train")
            for step in range(1, self.ctx.run.train.max_steps + 1):
                loss = self._loss()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.ctx.log({"step": step, "train_loss": loss.item()})
            return {"train_loss": loss.item()}

        def save(self, out_dir):
            CALLS.append("save")
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / "echo.json"
            path.write_text(json.dumps({"weight": self.model.weight.item()}))
            return [path]


    plugin = Plugin(name="echo", description="Test plugin that fits a line", config_cls=EchoConfig,
                    apply=apply, recipe=EchoRecipe)
    NOT_A_PLUGIN = 42


    def make_plugin():
        return plugin
''')


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, dict[str, str]], None]]:
    """``fake_dist(dist_name, {entry name: "module:attr"})`` installs a fake distribution on sys.path.

    The package ``hfx_test_echo`` is written once into the same folder. Afterwards the registry and the
    imported test modules are forgotten, so no other test sees them.
    """
    site = tmp_path / "site"
    (site / "hfx_test_echo").mkdir(parents=True)
    (site / "hfx_test_echo" / "__init__.py").write_text(ECHO_SOURCE)
    monkeypatch.syspath_prepend(str(site))

    def make(dist_name: str, entries: dict[str, str]) -> None:
        info = site / f"{dist_name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
        lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
        (info / "entry_points.txt").write_text(f"[hfx.plugins]\n{lines}")
        registry.reset()

    yield make
    registry.reset()
    for mod in [m for m in sys.modules if m.startswith("hfx_test_echo")]:
        del sys.modules[mod]


# --------------------------------------------------------------------------------------------- built-in


def test_builtin_finetune_comes_through_the_entry_point_group() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert eps["finetune"].value == "hfx_plugins.finetune:plugin"
    assert eps["finetune"].dist is not None and eps["finetune"].dist.name == "hfx"
    import hfx_plugins.finetune

    registry.reset()
    assert "finetune" in registry.available()
    assert registry.get("finetune") is hfx_plugins.finetune.plugin


def test_unknown_plugin_lists_installed_and_suggests_nearest() -> None:
    with pytest.raises(HfxError) as info:
        registry.get("finetun")
    msg = str(info.value)
    assert "unknown plugin 'finetun'" in msg and "did you mean 'finetune'" in msg
    assert "installed plugins:" in msg and "finetune" in msg.split("installed plugins:")[1]
    with pytest.raises(HfxError) as info:
        registry.get("zzzz")
    assert "did you mean" not in str(info.value) and "installed plugins:" in str(info.value)


@pytest.mark.parametrize("name", ["Echo", "my-plugin", "1st", "", "a b", "echo."])
def test_invalid_plugin_names_are_rejected(name: str) -> None:
    @dataclass
    class Cfg:
        x: int = 1
        """x."""

    with pytest.raises(HfxError, match="invalid"):
        registry.Plugin(name=name, description="d", config_cls=Cfg)


def test_valid_name_and_config_must_be_a_dataclass() -> None:
    @dataclass
    class Cfg:
        x: int = 1
        """x."""

    assert registry.Plugin(name="my_plugin2", description="d", config_cls=Cfg).name == "my_plugin2"
    with pytest.raises(HfxError, match="config_cls must be a dataclass"):
        registry.Plugin(name="p", description="d", config_cls=dict)


@dataclass
class _Cfg:
    x: int = 1
    """x."""


def test_package_resolves_each_part_by_the_standard_anatomy() -> None:
    p = registry.Plugin(name="conv", description="d", config_cls=_Cfg, package="hfx_plugins.lora", recipe="LoraRecipe")
    targets = {part: getattr(p, part).target for part in registry.ANATOMY}
    assert targets == {"apply": "hfx_plugins.lora.apply:apply", "recipe": "hfx_plugins.lora.recipe:LoraRecipe",
                       "checks": "hfx_plugins.lora.checks:checks", "save": "hfx_plugins.lora.io:save",
                       "load": "hfx_plugins.lora.io:load", "can_load": "hfx_plugins.lora.io:can_load"}
    assert p.presets_dir == Path(hfx_plugins_dir("lora")) / "configs"
    assert registry.resolve(p.apply).__module__ == "hfx_plugins.lora.apply"  # imported on first use only


def hfx_plugins_dir(name: str) -> str:
    return str(Path(__file__).resolve().parents[2] / "plugins" / name)


def test_parts_declared_absent_stay_absent() -> None:
    p = registry.Plugin(name="bare", description="d", config_cls=_Cfg, package="hfx_plugins.icl", recipe="IclRecipe",
                        apply=None, checks=None, save=None)
    assert (p.apply, p.checks, p.save, p.load, p.can_load) == (None, None, None, None, None)
    assert p.recipe.target == "hfx_plugins.icl.recipe:IclRecipe"  # type: ignore[union-attr]


def test_without_package_a_part_not_given_is_absent_and_a_recipe_name_is_refused() -> None:
    p = registry.Plugin(name="old", description="d", config_cls=_Cfg, apply=registry.lazy("m:apply"))
    assert (p.recipe, p.checks, p.save, p.load, p.can_load, p.presets_dir) == (None,) * 6
    assert p.apply.target == "m:apply"  # type: ignore[union-attr]
    with pytest.raises(HfxError, match="needs package=__name__"):
        registry.Plugin(name="old", description="d", config_cls=_Cfg, recipe="OldRecipe")


def test_every_builtin_plugin_resolves_its_parts() -> None:
    # Every part a built-in plugin declares imports and is callable (a wrong file or name fails here).
    for p in registry.iter_plugins():
        for part in registry.ANATOMY:
            value = getattr(p, part)
            assert value is None or callable(registry.resolve(value)), (p.name, part)
        assert p.presets_dir is not None and (p.presets_dir / "default.yaml").is_file(), p.name


def test_lazy_exports_takes_modules_beside_the_package_and_export_names_lists_them_once() -> None:
    table = {".model": ("set_adapter", "unload"), ".layer": ("LoraLinear",)}
    getter = registry.lazy_exports("hfx_plugins.lora", table)
    assert getter("set_adapter").__module__ == "hfx_plugins.lora.model"
    assert getter("LoraLinear").__module__ == "hfx_plugins.lora.layer"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getter("nope")
    assert registry.export_names(table) == ["LoraLinear", "set_adapter", "unload"]
    old_form = registry.lazy_exports("hfx.data", {"load_data": "hfx.data.loading"})  # {name: absolute module}
    assert old_form("load_data").__module__ == "hfx.data.loading"


def test_every_public_name_of_every_builtin_package_loads() -> None:
    # Each package's __all__ comes from its export table; a wrong module or name there fails only on use.
    import importlib

    root = Path(__file__).resolve().parents[2] / "plugins"
    for init in sorted(root.glob("*/__init__.py")):
        module = importlib.import_module(f"hfx_plugins.{init.parent.name}")
        missing = [name for name in module.__all__ if getattr(module, name, None) is None]
        assert not missing, (init.parent.name, missing)


def test_hfx_top_level_names_are_the_plugins_public_names() -> None:
    import hfx_plugins.distill
    import hfx_plugins.embed
    import hfx_plugins.ppo
    import hfx_plugins.reward

    assert hfx.make_student is hfx_plugins.distill.make_student
    assert hfx.DistillationTrainer is hfx_plugins.distill.DistillationTrainer
    assert hfx.embed is hfx_plugins.embed.embed
    assert hfx.PPOTrainer is hfx_plugins.ppo.PPOTrainer
    assert hfx.RewardTrainer is hfx_plugins.reward.RewardTrainer
    assert hfx.rankings_to_pairs is hfx_plugins.reward.rankings_to_pairs


# -------------------------------------------------------------------------------------- third-party plugin


def test_external_plugin_is_discovered_lazily(fake_dist: Callable[..., None]) -> None:
    fake_dist("hfx_test_echo", {"echo": "hfx_test_echo:plugin"})
    assert {"echo", "finetune"} <= set(registry.available())
    assert "hfx_test_echo" not in sys.modules  # listing names imports nothing
    plugin = registry.get("echo")
    assert "hfx_test_echo" in sys.modules
    assert plugin is sys.modules["hfx_test_echo"].plugin
    assert [p.name for p in registry.iter_plugins()] == sorted(registry.available())


def test_external_plugin_is_listed_and_shown(fake_dist: Callable[..., None], cli: Callable[..., object]) -> None:
    fake_dist("hfx_test_echo", {"echo": "hfx_test_echo:plugin"})
    res = cli("plugins")
    assert res.code == 0, res.err
    echo_row = next(line for line in res.out.splitlines() if line.startswith("│ echo "))
    assert "Test plugin that fits a line" in echo_row and "hfx_test_echo" in echo_row  # the "from" column
    assert any(line.startswith("│ finetune ") and "hfx_plugins" in line for line in res.out.splitlines())

    res = cli("config", "plugin=echo", "echo.target_slope=3.5")
    assert res.code == 0, res.err
    row = next(line for line in res.out.splitlines() if "echo.target_slope" in line)
    assert "3.5" in row and "float" in row and "Slope of the line the recipe fits." in row
    assert "echo.points" in res.out


def test_external_plugin_runs(fake_dist: Callable[..., None], cli: Callable[..., object], tmp_path: Path) -> None:
    fake_dist("hfx_test_echo", {"echo": "hfx_test_echo:plugin"})
    out = tmp_path / "runs"
    res = cli("run", "plugin=echo", "train.max_steps=1", "train.learning_rate=0.75", "echo.points=3",
              f"output_dir={out}")
    assert res.code == 0, res.err
    assert sys.modules["hfx_test_echo"].CALLS == ["setup", "evaluate", "train", "evaluate", "save"]
    (run_dir,) = out.iterdir()
    assert run_dir.name.endswith("-echo")
    summary = json.loads((run_dir / "summary.json").read_text())
    # Hand computation: x = (-1, 0, 1), y = 2x, w starts at 0, so MSE = mean((2x)^2) = 8/3. The gradient is
    # dMSE/dw = 2 (w - 2) mean(x^2) = -8/3, and one SGD step with lr 0.75 gives w = 0 + 0.75 * 8/3 = 2: MSE 0.
    assert summary["before"]["mse"] == pytest.approx(8 / 3, rel=1e-6)
    assert summary["after"]["mse"] == pytest.approx(0.0, abs=1e-10)
    assert summary["train"]["train_loss"] == pytest.approx(8 / 3, rel=1e-6)
    assert summary["artifacts"] == ["artifacts/echo.json"]
    assert json.loads((run_dir / "artifacts" / "echo.json").read_text())["weight"] == pytest.approx(2.0, abs=1e-6)
    assert (run_dir / "config.yaml").read_text().count("target_slope: 2.0") == 1
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["plugins"] == ["echo"]  # a JSON list, not the ListConfig's str()


def test_hfx_run_composes_and_validates_the_config_once(fake_dist: Callable[..., None], cli: Callable[..., object],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `hfx run` composed the config twice (the command, then the runner) and validated it three times (typed()
    # inside each compose, then again in the runner); the command now hands its Composed to the runner.
    import hfx.config.compose as compose_module

    calls = {"parse_overrides": 0, "typed": 0}
    for name in calls:
        original = getattr(compose_module, name)

        def counted(*args: object, _name: str = name, _original: Callable[..., object] = original) -> object:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(compose_module, name, counted)
    fake_dist("hfx_test_echo", {"echo": "hfx_test_echo:plugin"})
    res = cli("run", "plugin=echo", "train.max_steps=1", f"output_dir={tmp_path / 'runs'}")
    assert res.code == 0, res.err  # type: ignore[attr-defined]
    assert calls == {"parse_overrides": 1, "typed": 1}


def test_external_plugin_through_hfx_apply(fake_dist: Callable[..., None]) -> None:
    fake_dist("hfx_test_echo", {"echo": "hfx_test_echo:plugin"})
    layer = torch.nn.Linear(1, 1, bias=False)
    out = hfx.apply(layer, "echo", target_slope=3.0)
    assert out.weight.item() == 3.0
    (name, cfg), = hfx.api.applied(out)
    assert name == "echo" and cfg.target_slope == 3.0 and cfg.points == 3
    with pytest.raises(HfxError, match="did you mean 'target_slope'"):
        hfx.apply(layer, "echo", target_slop=3.0)


def test_entry_point_may_be_a_factory(fake_dist: Callable[..., None]) -> None:
    fake_dist("hfx_test_echo_factory", {"echo": "hfx_test_echo:make_plugin"})
    assert registry.get("echo") is sys.modules["hfx_test_echo"].plugin


def test_entry_point_that_is_not_a_plugin(fake_dist: Callable[..., None], cli: Callable[..., object]) -> None:
    fake_dist("hfx_test_bad", {"notaplugin": "hfx_test_echo:NOT_A_PLUGIN"})
    with pytest.raises(HfxError, match=r"'hfx_test_echo:NOT_A_PLUGIN'.*gave int, expected an hfx.registry.Plugin"):
        registry.get("notaplugin")
    res = cli("config", "plugin=notaplugin")
    assert res.code == 2 and len(res.err_lines) == 1 and "expected an hfx.registry.Plugin" in res.err


def test_entry_point_name_must_match_plugin_name(fake_dist: Callable[..., None]) -> None:
    fake_dist("hfx_test_misnamed", {"other": "hfx_test_echo:plugin"})
    with pytest.raises(HfxError, match="holds a plugin named 'echo'"):
        registry.get("other")


def test_entry_point_that_fails_to_import(fake_dist: Callable[..., None], cli: Callable[..., object]) -> None:
    # Before the fix in registry.get this was a ModuleNotFoundError traceback from every hfx command.
    fake_dist("hfx_test_broken", {"broken": "hfx_test_no_such_module:plugin"})
    with pytest.raises(HfxError, match=r"cannot load plugin 'broken'.*ModuleNotFoundError"):
        registry.get("broken")
    res = cli("run", "plugin=broken")
    assert res.code == 2 and len(res.err_lines) == 1 and "hfx_test_no_such_module" in res.err
    assert "Traceback" not in res.err


def test_two_distributions_claiming_one_name(fake_dist: Callable[..., None]) -> None:
    fake_dist("hfx_test_one", {"echo": "hfx_test_echo:plugin"})
    fake_dist("hfx_test_two", {"echo": "hfx_test_echo:make_plugin"})
    with pytest.raises(HfxError, match="two installed packages register the plugin 'echo'"):
        registry.available()
