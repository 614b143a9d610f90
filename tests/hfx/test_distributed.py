"""Two processes (DDP over gloo, on CPU) train exactly like one process with twice the gradient accumulation.

How the two processes are started: with the README's command,

    accelerate launch --cpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        -m hfx run ...

accelerate's ``--cpu`` launcher runs its multi-CPU mode through mpirun and, without ``--mpirun_hostfile``,
starts a *single* process; hfx (:mod:`hfx.runner.launch`) notices and starts the two processes with
``torch.distributed.run``. (``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...``
and ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m hfx run ...`` give the same.) All flags are
given, so no accelerate config file is read or needed.

Why the two runs see the same examples: the runner's sampler is one seeded permutation per epoch,
cut into batches of ``train.batch_size``; accelerate gives batch ``i`` to process ``i % 2``, so optimizer
step ``s`` of the 2-process run uses batches ``2s`` and ``2s+1``, exactly the two micro-batches that step
``s`` of the 1-process run accumulates. (This holds when an epoch has an even number of batches: with an odd
number accelerate drops the last one in 2 processes, while one process pairs it with the next epoch's first.)
The model has no dropout: with dropout the processes would draw masks from their own generators.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hfx.runner.run import _warn_single_cpu_launch, run

# 200 examples / batches of 4 = 50 batches an epoch (even); 30 steps x 2 micro-batches crosses into epoch 2.
# A high learning rate moves the weights far, so that any difference between the runs would grow.
COMMON = [
    "plugin=finetune", "data.path=sentiment", "data.max_train_samples=200", "data.max_eval_samples=64",
    "data.max_length=32", "finetune.classifier_dropout=0", "train.batch_size=4", "train.max_steps=30",
    "train.warmup_steps=0", "train.learning_rate=1e-3", "train.log_every=1", "train.eval_every=10",
    "train.save_every=10",
]
# Both processes of the DDP run reduce their gradients over gloo, then (g0 + g1) / 2; one process sums
# g0 / 2 + g1 / 2. Halving is exact in floating point and a sum of two terms does not depend on their order,
# so the results should be bit-identical; 1e-5 relative leaves room for a different all-reduce (more
# processes, other bucket order), whose float sums may round differently (~1e-7 relative per step).
RTOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: the whole module on one thread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_folder(output_dir: Path) -> Path:
    folders = [p for p in output_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders  # every process agreed on one folder; only the main one wrote
    return folders[0]


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def launch_two_processes(model: Path, output_dir: Path, log: Path) -> subprocess.CompletedProcess[str]:
    # The command the README gives: accelerate's --cpu launcher alone would start one process (it needs
    # mpirun); hfx.runner.launch.cpu_relaunch starts the two with torch.distributed.run.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "hfx", "run", *COMMON, f"model={model}", "train.gradient_accumulation_steps=1",
           f"output_dir={output_dir}"]
    env = {**{k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as fh:  # a file, not a pipe, which could fill up and stall the processes
        done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True, timeout=900)
    return done


def test_two_processes_match_one_process_with_twice_the_accumulation(bert0_dir: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    done = launch_two_processes(bert0_dir, tmp_path / "ddp", tmp_path / "ddp.log")
    assert done.returncode == 0, (tmp_path / "ddp.log").read_text()[-3000:]
    ddp_seconds = time.monotonic() - start
    with contextlib.redirect_stdout(io.StringIO()):
        one = run([*COMMON, f"model={bert0_dir}", "train.gradient_accumulation_steps=2",
                   f"output_dir={tmp_path / 'one'}"])

    ddp_dir = _run_folder(tmp_path / "ddp")
    ddp, single = json.loads((ddp_dir / "summary.json").read_text()), one.summary
    assert ddp["processes"] == 2 and single["processes"] == 1

    m_ddp, m_one = _metrics(ddp_dir), _metrics(one.run_dir)
    assert [r["step"] for r in m_ddp] == [r["step"] for r in m_one]  # each record once: only rank 0 logs
    losses_ddp = [r["train_loss"] for r in m_ddp if "train_loss" in r]
    losses_one = [r["train_loss"] for r in m_one if "train_loss" in r]
    assert len(losses_ddp) == 30
    assert losses_ddp == pytest.approx(losses_one, rel=RTOL)
    evals_ddp = [{k: v for k, v in r.items() if k.startswith("eval_")} for r in m_ddp if "eval_loss" in r]
    evals_one = [{k: v for k, v in r.items() if k.startswith("eval_")} for r in m_one if "eval_loss" in r]
    assert len(evals_ddp) == 4  # before, steps 10 and 20 (every rank evaluates), after
    for a, b in zip(evals_ddp, evals_one, strict=True):
        assert a == pytest.approx(b, rel=RTOL)
    assert ddp["train"] == pytest.approx(single["train"], rel=RTOL)  # final train loss
    assert ddp["after"] == pytest.approx(single["after"], rel=RTOL)  # final eval metrics
    assert ddp["after"]["loss"] != ddp["before"]["loss"]  # it did train

    # Checkpoints written once, by rank 0, while rank 1 waited (no deadlock on save_every).
    assert sorted(p.name for p in (ddp_dir / "checkpoints").iterdir()) == ["step-000020", "step-000030"]
    state = json.loads((ddp_dir / "checkpoints" / "step-000030" / "state.json").read_text())
    assert (state["step"], state["world_size"]) == (30, 2)

    diff = max(abs(a - b) / abs(b) for a, b in zip(losses_ddp, losses_one, strict=True))
    print(f"\n2 processes vs 1 process x 2 accumulation: max relative train-loss difference {diff:.1e}, "
          f"final train loss {ddp['train']['train_loss']:.7f} vs {single['train']['train_loss']:.7f}, "
          f"eval loss {ddp['after']['loss']:.7f} vs {single['after']['loss']:.7f}; DDP run {ddp_seconds:.1f} s")


def test_single_process_cpu_launch_is_reported(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``accelerate launch --cpu --num_processes 2`` (no mpirun) runs one process: hfx says so on stderr."""
    acc = SimpleNamespace(num_processes=1, is_main_process=True)
    for key in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    _warn_single_cpu_launch(acc)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""  # a plain `hfx run`
    # What accelerate's simple launcher sets when --cpu and --num_processes > 1 are given.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    _warn_single_cpu_launch(acc)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err.startswith("hfx: warning: accelerate launch --cpu started a single process") and err.count("\n") == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: real processes
    _warn_single_cpu_launch(acc)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
