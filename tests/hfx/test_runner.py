"""The shared runner: atomic writes, safe checkpoints, SIGKILL + resume, the run folder, accumulation, NaN.

Every training run here uses a tiny random BERT (hfx.testing) on 200 sentences of the bundled sentiment set,
one torch thread per process (on 2 shared cores, two threads per tiny process are ~10x slower, not faster).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import get_scheduler

from hfx.errors import HfxError
from hfx.io import atomic_dir, atomic_write_json
from hfx.runner.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from hfx.runner.run import run
from hfx.testing import save_tiny_model, tiny_bert

# Small and fast, but several epochs of real data: 200 examples, batches of 8 -> 25 steps an epoch.
TINY = [
    "plugin=finetune", "data.path=sentiment", "data.max_train_samples=200", "data.max_eval_samples=64",
    "data.max_length=32", "train.batch_size=8", "train.warmup_steps=0", "train.log_every=2",
]
# Same config, bit for bit, in every process: one thread (thread count can change float reductions).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("HFX_DEBUG", None)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: the whole module on one thread


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny bare BERT *with* dropout 0.1 (resuming must restore the dropout RNG exactly).

    Bare, as finetune loads it (it puts its own head on): a saved head would make transformers print a
    load report about unexpected keys on stderr, in the way of the one-line error checks below.
    """
    return save_tiny_model(tmp_path_factory.mktemp("runner-models") / "bert", "bert", "base")


def _run_folder(output_dir: Path) -> Path:
    folders = [p for p in output_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _hfx(*args: str) -> list[str]:
    return [sys.executable, "-m", "hfx", "run", *args]


# --- atomic writes -----------------------------------------------------------------------------------


def test_atomic_dir_replaces_on_success_and_keeps_old_on_error(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half-written")
        raise RuntimeError("boom")
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left

    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # neither the temp nor the old copy


def test_atomic_write_json_keeps_old_file_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"a": 1})

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # fails after the temp file has been written
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# --- checkpoints -----------------------------------------------------------------------------------------


def _setup(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """What a recipe's setup rebuilds on resume: the model (embeddings frozen), AdamW, a linear schedule."""
    model = tiny_bert("sequence-classification", seed=seed).train()
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    return model, opt, get_scheduler("linear", opt, 2, 20)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, steps: int) -> None:
    for _ in range(steps):
        ids = torch.randint(5, 1000, (4, 12))
        model(input_ids=ids, labels=torch.randint(0, 2, (4,))).loss.backward()  # dropout draws from the RNG
        opt.step()
        sched.step()
        opt.zero_grad()


def _draws() -> tuple[list[float], float, float]:
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_checkpoint_round_trip_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    model, opt, sched = _setup()
    _train(model, opt, sched, 3)
    path = save_checkpoint(tmp_path, 3, model, opt, sched)
    assert path == tmp_path / "step-000003"
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt_state, sched_state, draws = opt.state_dict(), sched.state_dict(), _draws()

    # Only safe formats: safetensors and JSON, and loading never unpickles.
    assert {p.suffix for p in path.iterdir()} == {".safetensors", ".json"}

    def no_pickle(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a checkpoint must load without pickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)

    # A resumed process: fresh objects (a new init seed), then the checkpoint.
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    model2, opt2, sched2 = _setup(seed=0)
    _train(model2, opt2, sched2, 1)  # make sure every piece of state differs before loading
    assert load_checkpoint(path, model2, opt2, sched2) == 3

    for n, p in model2.named_parameters():
        assert torch.equal(p, params[n]), n  # trainable from the checkpoint, frozen from the same-seed init
    new_state = opt2.state_dict()
    assert new_state["state"].keys() == opt_state["state"].keys()
    for idx, slots in opt_state["state"].items():
        for name, value in slots.items():
            assert torch.equal(new_state["state"][idx][name], value), (idx, name)
    for g_new, g_old in zip(new_state["param_groups"], opt_state["param_groups"], strict=True):
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in g_old.items()} == \
               {k: list(v) if isinstance(v, tuple) else v for k, v in g_new.items()}  # JSON: tuples -> lists
    assert sched2.state_dict() == sched_state
    assert _draws() == draws  # torch, python and numpy generators continue exactly where they were

    # ... and training on from it matches training on from the original objects.
    torch.manual_seed(7)
    _train(model, opt, sched, 2)
    torch.manual_seed(7)
    _train(model2, opt2, sched2, 2)
    for (n, a), b in zip(model.named_parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b), n


def test_checkpoint_keeps_newest_and_skips_unfinished(tmp_path: Path) -> None:
    model, opt, sched = _setup()
    _train(model, opt, sched, 1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    from safetensors.torch import load_file

    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, opt, sched, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003", "step-000004"]
    saved = load_file(str(tmp_path / "step-000004" / "model.safetensors"))
    assert frozen and not frozen & saved.keys()  # frozen weights are rebuilt by setup, not stored

    # What a SIGKILL during a checkpoint write leaves: a temporary folder. It is never read...
    (tmp_path / ".step-000005.tmp-abc").mkdir()
    (tmp_path / ".step-000005.tmp-abc" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000004"
    # ...and the next checkpoint removes it.
    save_checkpoint(tmp_path, 6, model, opt, sched, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004", "step-000006"]
    assert latest_checkpoint(tmp_path / "nothing-here") is None


# --- SIGKILL mid-training, resume, compare with an uninterrupted run ----------------------------------------

KILL_RUN = [*TINY, "train.max_steps=60", "train.save_every=5", "train.eval_every=20"]


@pytest.fixture(scope="module")
def killed_and_reference(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Kill an ``hfx run`` process (SIGKILL) just after its first checkpoint, then resume it to the end.

    The killed run is a real process started from the command line; the resumed and the uninterrupted
    runs go in this process (same single thread), which saves two interpreter start-ups (~10 s of CPU each).
    """
    root = tmp_path_factory.mktemp("sigkill")
    args = [*KILL_RUN, f"model={bert_dir}"]
    start = time.monotonic()
    log = root / "killed.log"  # a file, not a pipe: a full pipe would stall the process
    with log.open("w") as fh:
        victim = subprocess.Popen(_hfx(*args, f"output_dir={root / 'killed'}"), env=ENV, cwd=root,
                                  stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not list((root / "killed").glob("*/checkpoints/step-*/state.json")):
            if victim.poll() is not None:
                pytest.fail(f"the run ended (status {victim.returncode}) before its first checkpoint: "
                            f"{log.read_text()[-2000:]}")
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.005)
        assert victim.poll() is None, "the run finished before the kill: raise train.max_steps"
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    killed_dir = _run_folder(root / "killed")
    at_kill = {
        "checkpoints": sorted(p.name for p in (killed_dir / "checkpoints").glob("step-*")),
        "summary": (killed_dir / "summary.json").exists(),
        "logged_steps": [r["step"] for r in _metrics(killed_dir)],
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run([*args, f"output_dir={root / 'killed'}", "resume=true"])
        run([*args, f"output_dir={root / 'reference'}"])
    return {"killed": _run_folder(root / "killed"), "reference": _run_folder(root / "reference"),
            "at_kill": at_kill, "stdout": out.getvalue(), "seconds": time.monotonic() - start}


def test_sigkill_then_resume_matches_uninterrupted_run(killed_and_reference: dict[str, Any]) -> None:
    killed, ref, at_kill = killed_and_reference["killed"], killed_and_reference["reference"], killed_and_reference["at_kill"]
    # The kill landed mid-training: a checkpoint (not the last step), no summary.
    assert at_kill["checkpoints"] and at_kill["checkpoints"][-1] < "step-000060"
    assert not at_kill["summary"]
    first = int(at_kill["checkpoints"][-1].removeprefix("step-"))
    assert f"(step {first})" in killed_and_reference["stdout"]  # "resumed from .../step-000005 (step 5)"
    assert killed == _run_folder(killed.parent)  # resumed in place, no second folder

    # Same final metrics and the same logged curve, step by step. Tolerance 1e-6 absolute; on CPU with the
    # same data order, generators and thread count the numbers are bit-identical (observed difference 0.0).
    s_killed, s_ref = (json.loads((d / "summary.json").read_text()) for d in (killed, ref))
    assert s_killed["after"] == pytest.approx(s_ref["after"], abs=1e-6, rel=0)
    assert s_killed["train"] == pytest.approx(s_ref["train"], abs=1e-6, rel=0)
    assert s_killed["before"] == s_ref["before"]  # read back from before.json, not re-evaluated
    m_killed, m_ref = _metrics(killed), _metrics(ref)
    assert [r["step"] for r in m_killed] == [r["step"] for r in m_ref]  # truncated at the checkpoint, no duplicates
    for a, b in zip(m_killed, m_ref, strict=True):
        assert a.keys() == b.keys()
        assert a == pytest.approx(b, abs=1e-6, rel=0), a["step"]
    losses = [r["train_loss"] for r in m_ref if "train_loss" in r]
    assert len(losses) >= 30 and len(set(losses)) > 1


def test_run_folder_holds_everything(killed_and_reference: dict[str, Any], bert_dir: Path) -> None:
    for run_dir in (killed_and_reference["reference"], killed_and_reference["killed"]):
        names = {p.name for p in run_dir.iterdir()}
        assert names == {"config.yaml", "metrics.jsonl", "before.json", "summary.json", "curves.png",
                         "artifacts", "checkpoints"}
        assert not [p for p in run_dir.rglob(".*")], "temporary files left behind"
        cfg = OmegaConf.load(run_dir / "config.yaml")  # resolved: overrides and every default
        assert cfg.plugin == ["finetune"] and cfg.model == str(bert_dir)
        assert cfg.train.max_steps == 60 and cfg.train.save_every == 5 and cfg.train.learning_rate == 5e-5
        assert "${" not in (run_dir / "config.yaml").read_text()
        assert {"loss", "accuracy"} <= json.loads((run_dir / "before.json").read_text()).keys()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert {"plugins", "model", "before", "after", "train", "artifacts", "seconds", "processes"} <= summary.keys()
        assert summary["artifacts"] == ["artifacts/model"] and summary["processes"] == 1
        model_dir = run_dir / "artifacts" / "model"
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model_dir.iterdir()}
        png = (run_dir / "curves.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
        assert len(list((run_dir / "checkpoints").iterdir())) == 2  # keep_checkpoints=2
        records = _metrics(run_dir)
        assert records[0]["step"] == 0 and "eval_loss" in records[0]  # evaluation before training
        assert {r["step"] for r in records if "eval_accuracy" in r} == {0, 20, 40, 60}
        # Logged every 2 steps and at every checkpoint (so a resumed run logs the same windows).
        assert [r["step"] for r in records if "train_loss" in r] == sorted({*range(2, 61, 2), *range(5, 61, 5)})
    print(f"\nSIGKILL + resume + reference: {killed_and_reference['seconds']:.1f} s; "
          f"at the kill: {killed_and_reference['at_kill']}")


# --- failures ----------------------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    from hfx.cli.main import main

    capsys.readouterr()
    code = main(["run", *args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]


def test_nan_loss_is_one_line_error_and_leaves_no_folder(
    bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli(capsys, *TINY, f"model={bert_dir}", "train.max_steps=5", "train.learning_rate=1e30",
                     "train.max_grad_norm=0", f"output_dir={tmp_path}")
    assert code == 2
    assert len(err) == 1 and err[0].startswith("hfx: error: training loss is ") and "learning_rate" in err[0]
    assert not list(tmp_path.iterdir())  # failed before any checkpoint: no run folder


def test_resume_without_checkpoint_is_one_line_error(
    bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli(capsys, *TINY, f"model={bert_dir}", "resume=true", f"output_dir={tmp_path}")
    assert code == 2 and len(err) == 1 and "no unfinished run" in err[0] and "train.save_every" in err[0]
    code, err = _cli(capsys, *TINY, f"model={bert_dir}", "resume=true", f"run_dir={tmp_path / 'x'}")
    assert code == 2 and len(err) == 1 and "has no checkpoints to resume" in err[0]
    assert not list(tmp_path.iterdir())


def test_failure_after_checkpoint_keeps_folder_without_summary(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails after a checkpoint keeps its folder (no summary.json) and resume=true completes it."""
    from hfx_plugins.finetune.recipe import FinetuneRecipe

    original, calls = FinetuneRecipe._loss, []

    def nan_at_step_8(self: Any, model: Any, batch: Any) -> torch.Tensor:
        calls.append(1)
        loss = original(self, model, batch)
        return loss * float("nan") if len(calls) == 8 else loss

    args = [*TINY, f"model={bert_dir}", "train.max_steps=10", "train.save_every=3", f"output_dir={tmp_path}"]
    monkeypatch.setattr(FinetuneRecipe, "_loss", nan_at_step_8)
    with pytest.raises(HfxError, match="training loss is nan at step 8"):
        run(args)
    run_dir = _run_folder(tmp_path)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    assert not (run_dir / "summary.json").exists() and not (run_dir / "curves.png").exists()

    monkeypatch.setattr(FinetuneRecipe, "_loss", original)
    result = run([*args, "resume=true"])
    assert result.run_dir == run_dir and (run_dir / "summary.json").exists()
    assert [r["step"] for r in _metrics(run_dir) if "train_loss" in r] == [2, 3, 4, 6, 8, 9, 10]


# --- gradient accumulation ------------------------------------------------------------------------------------


def test_accumulation_matches_a_twice_larger_batch(bert0_dir: Path, tmp_path: Path) -> None:
    """4 examples x 2 accumulated micro-batches == one batch of 8, step by step.

    Without dropout (the tiny model has dropout 0 and the head finetune.classifier_dropout=0) the loss of
    a batch does not depend on how it is split: the sampler gives the same 8 examples to both, and accelerate
    divides each micro-batch loss by 2, so the summed gradient is the mean over the 8. With dropout the two
    runs draw different masks (one (8, T) draw vs two (4, T') draws) and could not be compared.
    Tolerance 1e-5 relative: padding differs (a micro-batch is padded to its own longest sentence), which
    changes matmul shapes and so float rounding, not the maths.
    """
    common = [*TINY, f"model={bert0_dir}", "finetune.classifier_dropout=0", "train.max_steps=8", "train.log_every=1",
              "train.learning_rate=1e-3"]
    big = run([*common, "train.batch_size=8", "train.gradient_accumulation_steps=1", f"output_dir={tmp_path / 'a'}"])
    acc = run([*common, "train.batch_size=4", "train.gradient_accumulation_steps=2", f"output_dir={tmp_path / 'b'}"])
    big_losses = [r["train_loss"] for r in _metrics(big.run_dir) if "train_loss" in r]
    acc_losses = [r["train_loss"] for r in _metrics(acc.run_dir) if "train_loss" in r]
    assert len(big_losses) == len(acc_losses) == 8
    assert acc_losses == pytest.approx(big_losses, rel=1e-5)
    assert acc.after == pytest.approx(big.after, rel=1e-5)
    diff = max(abs(a - b) / abs(b) for a, b in zip(acc_losses, big_losses, strict=True))
    print(f"\naccumulation vs big batch: max relative train-loss difference {diff:.1e}")


def test_eval_before_false_skips_only_the_first_evaluation(bert_dir: Path, tmp_path: Path) -> None:
    """train.eval_before=false: no "before" metrics (summary, before.json, no step-0 row), the rest runs."""
    skipped = run([*TINY, f"model={bert_dir}", "train.max_steps=4", "train.eval_before=false",
                   f"run_dir={tmp_path / 'skipped'}"])
    assert skipped.before == {} and skipped.summary["before"] == {} and {"loss", "accuracy"} <= skipped.after.keys()
    assert json.loads((skipped.run_dir / "before.json").read_text()) == {}
    assert all(r["step"] != 0 for r in _metrics(skipped.run_dir))


def test_preserved_rng_puts_back_every_random_state() -> None:
    # Expected: the draws of a generator seeded the same way with no block in between.
    from hfx.runner.checkpoint import preserved_rng

    def seed_and_draw(inner: bool) -> tuple[list[float], float, float]:
        torch.manual_seed(1), random.seed(1), np.random.seed(1)
        if inner:
            with preserved_rng():
                torch.manual_seed(5), random.seed(5), np.random.seed(5)
                torch.rand(3), random.random(), np.random.rand()
        return torch.rand(2).tolist(), random.random(), float(np.random.rand())

    assert seed_and_draw(True) == seed_and_draw(False)
