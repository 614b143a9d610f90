"""The ``hfx`` command: every bad input (unknown plugin, key or model, wrong value, missing file or column)
ends as one line on stderr, exit status 2, no traceback, and no run folder; ``plugins``, ``config`` and
``run --help`` work.

Most tests call ``hfx.cli.main.main(argv)`` in this process (the ``cli`` fixture of conftest.py); one runs
the installed console script in a subprocess to show the same behaviour end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hfx import registry
from hfx.config.run import RunConfig
from hfx.config.schema import describe
from hfx_plugins.finetune.config import FinetuneConfig


def assert_one_line_error(res, out_dir: Path, *needles: str) -> str:
    """Exit 2, exactly one stderr line starting with "hfx: error:", no traceback, no run folder."""
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1, res.err
    line = res.err_lines[0]
    assert line.startswith("hfx: error: ") and "Traceback" not in res.err
    for needle in needles:
        assert needle in line, (needle, line)
    assert not out_dir.exists() or not any(out_dir.iterdir()), f"left behind: {list(out_dir.iterdir())}"
    return line


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


# ------------------------------------------------------------------------------------------- bad input


def test_unknown_plugin(cli: Callable, out_dir: Path) -> None:
    line = assert_one_line_error(cli("run", "plugin=finetun", f"output_dir={out_dir}"), out_dir,
                                 "unknown plugin 'finetun'", "did you mean 'finetune'", "installed plugins:")
    assert all(name in line.split("installed plugins:")[1] for name in registry.available())


@pytest.mark.parametrize(
    ("arg", "nearest"),
    [("train.max_step=3", "train.max_steps"), ("finetune.num_label=3", "finetune.num_labels"),
     ("data.lable_column=x", "data.label_column")],
)
def test_unknown_key(cli: Callable, out_dir: Path, arg: str, nearest: str) -> None:
    key = arg.split("=")[0]
    assert_one_line_error(cli("run", "plugin=finetune", arg, f"output_dir={out_dir}"), out_dir,
                          f"unknown config key '{key}'", f"did you mean '{nearest}'")


@pytest.mark.parametrize(
    ("arg", "key", "expected"),
    [("train.max_steps=abc", "train.max_steps", "Integer"), ("train.learning_rate=fast", "train.learning_rate", "Float"),
     ("resume=maybe", "resume", "bool")],
)
def test_wrong_value_type(cli: Callable, out_dir: Path, arg: str, key: str, expected: str) -> None:
    assert_one_line_error(cli("run", "plugin=finetune", arg, f"output_dir={out_dir}"), out_dir,
                          f"wrong value for '{key}'", expected)


def test_argument_not_key_value(cli: Callable, out_dir: Path) -> None:
    assert_one_line_error(cli("run", "plugin=finetune", "max_steps", f"output_dir={out_dir}"), out_dir,
                          "argument 'max_steps' is not key=value")


def test_model_path_does_not_exist(cli: Callable, out_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    assert_one_line_error(cli("run", "plugin=finetune", f"model={missing}", f"output_dir={out_dir}"), out_dir,
                          f"model path '{missing}' does not exist")


def test_unknown_model_name_suggests_offline_name(cli: Callable, out_dir: Path) -> None:
    assert_one_line_error(cli("run", "plugin=finetune", "model=minilmm", f"output_dir={out_dir}"), out_dir,
                          "unknown model 'minilmm'", "did you mean 'minilm'")


def test_data_path_does_not_exist(cli: Callable, out_dir: Path, tmp_path: Path, tiny_bert_dir: Path) -> None:
    missing = tmp_path / "no-such-data.jsonl"
    assert_one_line_error(
        cli("run", "plugin=finetune", f"model={tiny_bert_dir}", f"data.path={missing}", f"output_dir={out_dir}"),
        out_dir, f"data path '{missing}' does not exist")


def test_missing_data_column(cli: Callable, out_dir: Path, tiny_bert_dir: Path) -> None:
    # The bundled sentiment set has the columns text, label, label_text, word, rating.
    assert_one_line_error(
        cli("run", "plugin=finetune", f"model={tiny_bert_dir}", "data.label_column=lable", f"output_dir={out_dir}"),
        out_dir, "data column 'lable' not found", "did you mean 'label'", "available columns:")


def test_config_file_missing(cli: Callable, out_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(cli("run", "--config", str(missing), "plugin=finetune", f"output_dir={out_dir}"),
                          out_dir, f"config file '{missing}' does not exist")


def test_no_plugin_given(cli: Callable, out_dir: Path) -> None:
    assert_one_line_error(cli("run", f"output_dir={out_dir}"), out_dir, "no plugin given; add plugin=NAME")


def test_config_command_shares_the_errors(cli: Callable, out_dir: Path) -> None:
    assert_one_line_error(cli("config", "plugin=finetune", "train.max_step=3"), out_dir,
                          "did you mean 'train.max_steps'")


def test_validate_takes_only_plugin(cli: Callable, out_dir: Path) -> None:
    assert_one_line_error(cli("validate", "train.max_steps=3"), out_dir, "hfx validate takes only plugin=NAME")
    assert_one_line_error(cli("validate", "plugin=finetun"), out_dir, "did you mean 'finetune'")


def test_hfx_debug_shows_the_traceback(cli: Callable, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HFX_DEBUG", "1")
    res = cli("run", "plugin=finetune", "train.max_step=3", f"output_dir={out_dir}")
    assert res.code == 2
    assert "Traceback (most recent call last)" in res.err and "HfxError" in res.err
    assert res.err_lines[-1].startswith("hfx: error: unknown config key 'train.max_step'")


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed ``hfx`` script: exit status 2 and one line on stderr, seen from outside the process."""
    script = Path(sys.executable).with_name("hfx")
    assert script.is_file(), "the console script is installed next to the interpreter (pip install -e .)"
    out = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "HFX_DEBUG"}
    proc = subprocess.run([str(script), "run", "plugin=finetun", f"output_dir={out}"], capture_output=True,
                          text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("hfx: error: unknown plugin 'finetun' (did you mean 'finetune'?)")
    assert not out.exists()


# ----------------------------------------------------------------------------------------- good input


def test_plugins_table(cli: Callable) -> None:
    res = cli("plugins")
    assert res.code == 0 and res.err == ""
    for p in registry.iter_plugins():
        row = next(line for line in res.out.splitlines() if line.startswith(f"│ {p.name} "))
        assert p.description in row


def test_config_prints_every_field_with_value_and_help(cli: Callable) -> None:
    res = cli("config", "plugin=finetune", "finetune.num_labels=5")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    rows = list(describe(RunConfig)) + list(describe(FinetuneConfig, "finetune"))
    for key, type_name, _default, doc in rows:
        row = next((line for line in lines if f"│ {key} " in line), None)
        assert row is not None, f"{key} missing from `hfx config`"
        assert type_name in row and doc.split()[0] in row, (key, row)
    assert "5" in next(line for line in lines if "│ finetune.num_labels " in line)


@pytest.mark.parametrize("command", ["run", "config"])
def test_help(cli: Callable, command: str) -> None:
    res = cli(command, "--help")
    assert res.code == 0
    for needle in ("--config FILE", "+key=value", "++key=value", "~key", "plugin=[quant,lora]", "preset=NAME"):
        assert needle in res.out, needle


def test_top_level_usage_error_is_argparse_status_2(cli: Callable) -> None:
    res = cli("frobnicate")
    assert res.code == 2 and "invalid choice" in res.err


def test_hfx_run_lora_reaches_the_lora_layer_through_one_module_per_step(
        cli: Callable[..., object], tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `hfx run plugin=lora lora.r=16` to the nn.Linear holding LoRA's A (r, in), one call per file: the command,
    # the runner, the recipe's setup, the context applying the run's plugins, hfx.apply, then lora's own files.
    # Before, the runner composed the config again, and a lazy wrapper's __call__ plus a one-line apply() that
    # only forwarded to lora/model.py sat between hfx.apply and add_adapter (10 calls; now 8).
    import traceback

    import torch

    routes: list[list[str]] = []
    original = torch.nn.Linear.__init__

    def recording(self: torch.nn.Linear, *args: object, **kwargs: object) -> None:
        frames = traceback.extract_stack()[:-1]
        if not routes and any(f.filename.endswith("lora/layer.py") for f in frames):
            start = next(i for i, f in enumerate(frames) if f.filename.endswith("cli/main.py"))
            routes.append([f"{'/'.join(Path(f.filename).parts[-2:])}:{f.name}" for f in frames[start:]])
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Linear, "__init__", recording)
    res = cli("run", "plugin=lora", f"model={tiny_llama_dir}", "lora.r=16", "train.max_steps=1", "train.batch_size=4",
              "data.max_train_samples=8", "data.max_eval_samples=4", "lora.eval_generations=0", f"output_dir={tmp_path}")
    assert res.code == 0, res.err  # type: ignore[attr-defined]
    assert routes == [["cli/main.py:main", "runner/run.py:run", "lora/recipe.py:setup", "runner/context.py:apply_plugins",
                       "hfx/api.py:apply", "lora/apply.py:add_adapter", "lora/inject.py:inject", "lora/layer.py:add_adapter"]]
