"""Fuzzed config input and injected faults: the scenarios of benchmarks/reliability.py, with fewer cases.

Every expected outcome is stated by the scenario: success or a one-line ``HfxError`` for fuzzed input; after
a ``kill -9`` the newest complete checkpoint / saved folder loads and holds at least the last completed
write; a full disk is one line and leaves the previous folder byte-identical; a damaged file is one line
naming it. The figures with more cases are in benchmarks/results/reliability.md.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin
from safetensors.torch import save_file
from tqdm.auto import tqdm

from hfx.config.run import TrainConfig
from hfx.errors import HfxError
from hfx.io import atomic_dir, load_safetensors
from hfx.runner.checkpoint import latest_checkpoint, load_checkpoint
from hfx.runner.loop import TrainLoop
from hfx.runner.run_dir import RunDir
from hfx.testing import tiny_bert

_spec = importlib.util.spec_from_file_location("hfx_reliability_bench", Path(__file__).parents[2] / "benchmarks" / "reliability.py")
R = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(R)  # type: ignore[union-attr]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fault scenarios fork a writer process")


def test_fuzzed_overrides_and_yaml_give_success_or_one_line_error() -> None:
    result = R.fuzz(n_parse=300, n_compose=30, n_yaml=30)
    print(f"\nfuzz: {result['cases']} cases in {result['seconds']} s, failures {result['examples']}")
    assert result["cases"] == 360
    assert result["not_one_line_hfx_error"] == 0, result["examples"]


def test_kill_during_checkpoint_write_keeps_the_newest_complete_one(tmp_path: Path) -> None:
    result = R.kill_during_checkpoint(4, tmp_path)
    assert result["survived"] == 4 and result["files_lost"] == 0, result
    assert result["kills_during_a_write"] >= 1  # the kills did land inside writes (a temporary folder was left)


def test_kill_during_hfx_save_keeps_a_loadable_folder(tmp_path: Path) -> None:
    result = R.kill_during_save(4, tmp_path)
    assert result["survived"] == 4 and result["files_lost"] == 0, result


def test_full_disk_mid_save_is_one_line_and_keeps_the_previous_folder(tmp_path: Path) -> None:
    result = R.disk_full(tmp_path)
    assert result["survived"] == result["faults"] >= 2 and result["files_lost"] == 0, result["cases"]


def test_damaged_safetensors_and_json_are_named(tmp_path: Path) -> None:
    result = R.corrupted_files(tmp_path)
    assert result["faults"] >= 20 and result["survived"] == result["faults"], result["failures"]


def test_second_run_into_a_held_folder_refuses(tmp_path: Path) -> None:
    result = R.run_dir_lock(tmp_path)
    assert result["cases"] == {"second run refused": True, "stale lock taken over": True}
    # The refused run never removes the folder it does not hold.
    assert RunDir(tmp_path / "run").discard_if_empty() is None and (tmp_path / "run").exists()


def test_nan_weights_and_embeddings_are_named() -> None:
    assert R.nan_checks()["cases"] == {"nan weight named": True, "inf embedding row named": True}


def test_load_safetensors_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    with pytest.raises(HfxError, match="does not exist"):
        load_safetensors(path)
    save_file({"a": torch.ones(64, 64)}, str(path))
    assert torch.equal(load_safetensors(path)["a"], torch.ones(64, 64))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(HfxError) as err:
        load_safetensors(path)
    assert str(path) in str(err.value) and "truncated or corrupted" in str(err.value) and "\n" not in str(err.value)


def test_atomic_dir_puts_back_a_version_moved_aside(tmp_path: Path) -> None:
    """What a kill between the two renames of the fallback path leaves: only ``.name.old-PID``."""
    (tmp_path / ".model.old-123").mkdir()
    (tmp_path / ".model.old-123" / "w").write_text("old")
    (tmp_path / ".model.tmp-999999999-x").mkdir()  # a dead writer's temporary folder
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model"):
        raise RuntimeError("the new write fails")
    assert (tmp_path / "model" / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_nan_loss_stops_with_its_step_and_leaves_checkpoints_loadable(tmp_path: Path) -> None:
    train = TrainConfig(max_steps=6, batch_size=2, learning_rate=1e-3, save_every=2, log_every=1)
    plugin = GradientAccumulationPlugin(num_steps=1, sync_with_dataloader=False)
    ctx = SimpleNamespace(run=SimpleNamespace(train=train, seed=0), accelerator=Accelerator(gradient_accumulation_plugin=plugin),
                          run_dir=RunDir(tmp_path), print=lambda *a: None, log=lambda r: None,
                          progress=lambda total, desc, initial=0: tqdm(total=total, initial=initial, disable=True))
    data = [{"input_ids": torch.randint(5, 1000, (8,)), "labels": torch.tensor(i % 2)} for i in range(8)]
    calls: list[int] = []

    def loss_fn(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        loss = model(**batch).loss
        return loss * float("nan") if len(calls) == 5 else loss

    model = tiny_bert("sequence-classification")
    loop = TrainLoop(ctx, model, data, lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]},
                     loss_fn=loss_fn)
    with pytest.raises(HfxError, match="training loss is nan at step 5"):
        loop.run()
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt is not None and ckpt.name == "step-000004"
    fresh = tiny_bert("sequence-classification", seed=1)
    opt = torch.optim.AdamW(fresh.parameters())
    assert load_checkpoint(ckpt, fresh, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)) == 4
    for p in fresh.parameters():
        assert torch.isfinite(p).all()


def test_fuzz_findings_stay_fixed(tmp_path: Path) -> None:
    """Cases the benchmark's fuzz found: a two-line error for an argument with a newline, and a traceback for
    ``plugin: ${train}`` in a config file (removing the key resolved it)."""
    from hfx.config.compose import compose

    with pytest.raises(HfxError) as err:
        compose(["plugin=finetune", "a\nb"])
    assert "\n" not in str(err.value)
    path = tmp_path / "run.yaml"
    path.write_text("plugin: ${train}\n")
    cfg, _ = compose(["plugin=finetune"], str(path))  # the command line names the plugin
    assert list(cfg.plugin) == ["finetune"]
