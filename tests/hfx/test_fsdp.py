"""Sharded training (``train.fsdp=true``, FSDP2 over gloo on CPU) trains exactly like one process.

Two processes each take micro-batches of 4 with FSDP2 (hfx.runner.fsdp: every block, the head, the body and
the root sharded, each rank holding half of every parameter); one process accumulates the same two
micro-batches per step (gradient_accumulation_steps=2). accelerate hands batch ``i`` to process ``i % 2``,
so step ``s`` of both runs sees batches ``2s`` and ``2s+1`` (the even-batch argument of test_distributed.py).
Expected: the same adapter / weights within 1e-4. FSDP2 reduce-scatters (g0 + g1) / 2 where one process sums
g0 / 2 + g1 / 2; both round alike for two terms, and the observed differences are <= 2e-8 (sharded
all-gathers move bits, not values). No dropout anywhere (the processes would draw their own masks).

How the processes are started: this file is its own worker. ``python -m torch.distributed.run
--nproc_per_node 2 tests/hfx/test_fsdp.py ARGS_JSON ...`` runs ``hfx run`` once per JSON list of
overrides in each process, so one launch (one interpreter start-up per process, the slow part) serves the
lora run, the finetune run and the run that is killed; the resume is the README's literal command,
``torchrun --nproc_per_node 2 -m hfx run ... resume=true``. ``ACCELERATE_USE_CPU`` is not set: hfx asks
accelerate for the CPU itself when there is no CUDA.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: the whole module on one thread

ATOL = 1e-4  # the task's bound; observed <= 2e-8 (see the module docstring)
LORA = ["plugin=lora", "lora.lora_dropout=0", "lora.eval_generations=0", "lora.r=4", "lora.merge=true",
        "data.max_train_samples=48",
        "data.max_eval_samples=8", "train.batch_size=4", "train.max_steps=12", "train.learning_rate=5e-3",
        "train.log_every=1", "train.save_every=4", "train.keep_checkpoints=3"]
FINETUNE = ["plugin=finetune", "data.path=sentiment", "data.max_train_samples=48", "data.max_eval_samples=8",
            "data.max_length=32", "finetune.classifier_dropout=0", "train.batch_size=4", "train.max_steps=6",
            "train.learning_rate=1e-3", "train.log_every=1", "train.save_every=6"]
ENV = {**{k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}, "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc): torchrun starts its workers in sessions of their own, so a
    signal to torchrun's process group does not reach them."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").glob("*")
                for c in (task / "children").read_text().split() if (task / "children").is_file()]
    return [d for c in children for d in (c, *_descendants(c))]


def _kill_launch(launch: subprocess.Popen[bytes]) -> None:
    """SIGKILL the workers of a torchrun launch and torchrun itself (what `kill -9` of each would do)."""
    for pid in [*_descendants(launch.pid), launch.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    launch.wait()


def _run_folder(output_dir: Path) -> Path:
    (folder,) = [p for p in output_dir.iterdir() if p.is_dir()]  # one folder: every rank agreed on it
    return folder


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tiny_llama_dir: Path, bert0_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 2-process launch (lora, finetune, then a lora run killed with SIGKILL after its first checkpoint),
    the resume of the killed run (2 processes), and the two 1-process runs they are compared with."""
    from hfx.runner.run import run

    root = tmp_path_factory.mktemp("fsdp")
    lora = [*LORA, f"model={tiny_llama_dir}", "train.fsdp=true"]
    finetune = [*FINETUNE, f"model={bert0_dir}", "train.fsdp=true"]
    jobs = [[*lora, f"output_dir={root / 'lora2'}"], [*finetune, f"output_dir={root / 'ft2'}"],
            [*lora, f"output_dir={root / 'killed'}"]]
    log = root / "launch.log"  # a file, not a pipe, which could fill up and stall the processes
    start = time.monotonic()
    with log.open("w") as fh:
        launch = subprocess.Popen(_torchrun(__file__, *map(json.dumps, jobs)), env=ENV, stdout=fh,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not list((root / "killed").glob("*/checkpoints/step-*/state.json")):
            if launch.poll() is not None:
                pytest.fail(f"the launch ended ({launch.returncode}) before the kill: {log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "no checkpoint of the run to kill within 600 s"
            time.sleep(0.005)
        _kill_launch(launch)  # both workers and torchrun
    finally:
        if launch.poll() is None:
            _kill_launch(launch)
    killed = _run_folder(root / "killed")
    at_kill = sorted(p.name for p in (killed / "checkpoints").glob("step-*"))
    assert not (killed / "summary.json").exists(), "the run finished before the kill: raise train.max_steps"
    resume_log = root / "resume.log"
    with resume_log.open("w") as fh:
        done = subprocess.run(_torchrun("-m", "hfx", "run", *lora, f"output_dir={root / 'killed'}", "resume=true"),
                              env=ENV, stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, resume_log.read_text()[-3000:]
    two_seconds = time.monotonic() - start
    with contextlib.redirect_stdout(io.StringIO()):
        lora1 = run([*LORA, f"model={tiny_llama_dir}", "train.gradient_accumulation_steps=2",
                     f"output_dir={root / 'lora1'}"])
        ft1 = run([*FINETUNE, f"model={bert0_dir}", "train.gradient_accumulation_steps=2", f"output_dir={root / 'ft1'}"])
    return {"lora2": _run_folder(root / "lora2"), "ft2": _run_folder(root / "ft2"), "killed": killed,
            "at_kill": at_kill, "lora1": lora1.run_dir, "ft1": ft1.run_dir, "log": log.read_text(),
            "resume_log": resume_log.read_text(), "seconds": two_seconds}


def test_lora_two_ranks_equal_one_process_and_load_in_peft(runs: dict[str, Any], tiny_llama_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    two, one = runs["lora2"], runs["lora1"]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2
    a2 = load_file(str(two / "artifacts" / "adapter" / "adapter_model.safetensors"))
    a1 = load_file(str(one / "artifacts" / "adapter" / "adapter_model.safetensors"))
    assert {k: v.shape for k, v in a2.items()} == {k: v.shape for k, v in a1.items()}  # whole, not a rank's half
    assert _max_diff(a2, a1) <= ATOL
    assert max(v.abs().max().item() for k, v in a2.items() if "lora_B" in k) > 1e-3  # B left its zero init
    losses = [[r["train_loss"] for r in _metrics(d) if "train_loss" in r] for d in (two, one)]
    assert len(losses[0]) == 12 and losses[0] == pytest.approx(losses[1], abs=ATOL, rel=0)
    # peft reads the 2-rank adapter (every key, full shapes) and holds the 1-process adapter's values.
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                                           two / "artifacts" / "adapter")
    loaded = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert _max_diff(loaded, a1) <= ATOL
    # Merging under FSDP: rank 0 gathers the whole model first, then merges as one process does.
    m2, m1 = (load_file(str(d / "artifacts" / "merged" / "model.safetensors")) for d in (two, one))
    assert _max_diff(m2, m1) <= ATOL
    # The checkpoints are gathered by rank 0 into an unsharded run's layout: the same files, the same values.
    for name in ("model", "optimizer"):
        c2, c1 = (load_file(str(d / "checkpoints" / "step-000012" / f"{name}.safetensors")) for d in (two, one))
        assert _max_diff(c2, c1) <= ATOL, name
    print(f"\nlora, 2 ranks (FSDP) vs 1 process: max |adapter difference| {_max_diff(a2, a1):.1e}; "
          f"2-process launches {runs['seconds']:.0f} s")


def test_finetune_two_ranks_equal_one_process(runs: dict[str, Any]) -> None:
    two, one = runs["ft2"], runs["ft1"]
    w2 = load_file(str(two / "artifacts" / "model" / "model.safetensors"))
    w1 = load_file(str(one / "artifacts" / "model" / "model.safetensors"))
    assert _max_diff(w2, w1) <= ATOL
    s2, s1 = (json.loads((d / "summary.json").read_text()) for d in (two, one))
    assert s2["processes"] == 2 and abs(s1["after"]["loss"] - s1["before"]["loss"]) > 1e-3  # it did train
    assert s2["after"]["loss"] == pytest.approx(s1["after"]["loss"], abs=ATOL)
    print(f"\nfinetune, 2 ranks (FSDP) vs 1 process: max |weight difference| {_max_diff(w2, w1):.1e}")


def test_sigkill_then_resume_equals_uninterrupted(runs: dict[str, Any]) -> None:
    killed, ref = runs["killed"], runs["lora2"]
    assert runs["at_kill"] and runs["at_kill"][-1] < "step-000012"  # killed mid-training
    assert "resumed from" in runs["resume_log"]
    a_killed = load_file(str(killed / "artifacts" / "adapter" / "adapter_model.safetensors"))
    a_ref = load_file(str(ref / "artifacts" / "adapter" / "adapter_model.safetensors"))
    assert _max_diff(a_killed, a_ref) <= 1e-6  # same processes, data order and generators: bit-identical here
    m_killed, m_ref = _metrics(killed), _metrics(ref)
    assert [r["step"] for r in m_killed] == [r["step"] for r in m_ref]
    for a, b in zip(m_killed, m_ref, strict=True):
        assert a == pytest.approx(b, abs=1e-6, rel=0), a["step"]


def test_single_process_warns_then_trains_plainly(tiny_llama_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from hfx.runner.run import run

    result = run([*LORA, f"model={tiny_llama_dir}", "train.max_steps=2", "train.save_every=0", "train.fsdp=true",
                  f"output_dir={tmp_path}"])
    err = [line for line in capsys.readouterr().err.splitlines() if "train.fsdp" in line]
    assert err == [err[0]] and err[0].startswith("hfx: warning: train.fsdp=true in a single process")
    assert result.summary["processes"] == 1 and (result.run_dir / "artifacts" / "adapter").is_dir()


def test_model_without_blocks_is_refused() -> None:
    from hfx.errors import HfxError
    from hfx.runner.fsdp import block_modules

    with pytest.raises(HfxError, match="no transformer blocks to shard") as err:
        block_modules(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
    assert "\n" not in str(err.value)


def test_wrap_policy_follows_no_split_modules_then_layer_lists() -> None:
    from hfx.runner.fsdp import block_modules
    from hfx.testing import tiny_model

    llama, _ = tiny_model("llama", "causal-lm", 0)
    assert [type(m).__name__ for m in block_modules(llama)] == ["LlamaDecoderLayer"] * len(llama.model.layers)

    class Stack(torch.nn.Module):  # no _no_split_modules: the ModuleList of layers
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))

    stack = Stack()
    assert block_modules(stack) == list(stack.layers)


def test_recipe_outside_the_shared_loop_is_refused() -> None:
    from hfx import registry
    from hfx.errors import HfxError
    from hfx.runner.fsdp import check_recipe

    ctx = SimpleNamespace(run=SimpleNamespace(train=SimpleNamespace(fsdp=True)),
                          accelerator=SimpleNamespace(num_processes=2), sharded=[])
    for name in ("ppo", "grpo"):  # their own trainers: refused before setup, naming the plugin
        with pytest.raises(HfxError, match=f"not supported by plugin '{name}'") as err:
            check_recipe(ctx, name, registry.resolve(registry.get(name).recipe))
        assert "\n" not in str(err.value)
    check_recipe(ctx, "lora", registry.resolve(registry.get("lora").recipe))  # the shared loop: accepted
    with pytest.raises(HfxError, match="not supported by plugin 'lora'"):
        check_recipe(ctx, "lora")  # after training: no model was sharded after all
    ctx.sharded.append(torch.nn.Linear(2, 2))
    check_recipe(ctx, "lora")
    ctx.accelerator.num_processes = 1  # one process: plain training, nothing to refuse
    check_recipe(SimpleNamespace(**{**vars(ctx), "sharded": []}), "ppo", registry.resolve(registry.get("ppo").recipe))


if __name__ == "__main__":  # the worker: python -m torch.distributed.run ... tests/hfx/test_fsdp.py JOB_JSON ...
    torch.set_num_threads(1)
    from hfx.runner.run import run

    for job in sys.argv[1:]:
        run(json.loads(job))
