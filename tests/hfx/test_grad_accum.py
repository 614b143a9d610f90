"""One optimizer step's loss is the mean over all its target tokens, however the step is split.

Causal-LM examples with 2 and 44 target tokens (after the one-position shift): the gradient of one step is
the same for batch 1 x accumulation 2, batch 2 x accumulation 1 and 2 processes (DDP over gloo) x batch 1,
and it equals the expected value computed independently: transformers' own loss (``model(**batch).loss``,
its mean over the 46 shifted targets) of the whole batch at once, back-propagated in one call. Averaging
the two micro-batch means instead (the transformers bug fixed in 4.46) gives a gradient about its own norm
away; :func:`test_naive_micro_batch_mean_is_far_off` measures that, so the tolerance below can fail.

This file is also the DDP worker: ``python -m torch.distributed.run --nproc_per_node 2 test_grad_accum.py OUT``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hfx.config.run import TrainConfig
from hfx.data.collate import IGNORE_INDEX
from hfx.runner.loop import TrainLoop, shifts_labels, target_count
from hfx.runner.run_dir import RunDir
from hfx.testing import tiny_bert, tiny_llama

# Relative gradient difference allowed: the padded (2, 48) batch and the unpadded (1, 20) micro-batch run
# matmuls of other shapes, whose float32 sums round differently (observed ~1e-7); the maths is identical.
RTOL = 1e-5
# The tests wrap optimizer.step to read the gradients it is given; torch then warns about the wrapping.
pytestmark = pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")


def examples() -> list[dict[str, list[int]]]:
    """Two texts: 20 tokens with the last 2 as targets, 48 tokens with the last 44 as targets (after the shift)."""
    g = torch.Generator().manual_seed(0)
    short = torch.randint(10, 1000, (20,), generator=g).tolist()
    long = torch.randint(10, 1000, (48,), generator=g).tolist()
    return [
        {"input_ids": short, "labels": [IGNORE_INDEX] * 18 + short[18:]},  # labels[1:]: 2 targets
        {"input_ids": long, "labels": [IGNORE_INDEX] * 4 + long[4:]},  # labels[1:]: 44 targets
    ]


def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Right padding: pad id 0, attention mask 0, label IGNORE_INDEX. -> (B, T) each."""
    width = max(len(r["input_ids"]) for r in rows)
    pad = [width - len(r["input_ids"]) for r in rows]
    return {
        "input_ids": torch.tensor([r["input_ids"] + [0] * p for r, p in zip(rows, pad, strict=True)]),
        "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * p for r, p in zip(rows, pad, strict=True)]),
        "labels": torch.tensor([r["labels"] + [IGNORE_INDEX] * p for r, p in zip(rows, pad, strict=True)]),
    }


def _ctx(batch_size: int, accumulation: int, folder: Path) -> SimpleNamespace:
    train = TrainConfig(max_steps=1, batch_size=batch_size, gradient_accumulation_steps=accumulation,
                        learning_rate=1e-3, max_grad_norm=0.0, log_every=1)
    logged: list[dict[str, Any]] = []
    # What hfx.runner.run builds: an optimizer step is always exactly `accumulation` micro-batches.
    plugin = GradientAccumulationPlugin(num_steps=accumulation, sync_with_dataloader=False)
    return SimpleNamespace(
        run=SimpleNamespace(train=train, seed=0), accelerator=Accelerator(gradient_accumulation_plugin=plugin),
        run_dir=RunDir(folder), print=lambda *a: None, log=logged.append, logged=logged,
        progress=lambda total, desc, initial=0: tqdm(total=total, initial=initial, disable=True),
    )


def loop_gradient(batch_size: int, accumulation: int, folder: Path) -> tuple[dict[str, torch.Tensor], float]:
    """The gradient the loop hands to the optimizer at its first step, and the loss it logs."""
    model = tiny_llama("causal-lm", seed=0)
    ctx = _ctx(batch_size, accumulation, folder)
    loop = TrainLoop(ctx, model, examples(), collate)  # type: ignore[arg-type]
    grads: dict[str, torch.Tensor] = {}
    step = loop.optimizer.step

    def record(*args: Any, **kwargs: Any) -> Any:
        grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        return step(*args, **kwargs)

    loop.optimizer.step = record  # type: ignore[method-assign]
    loop.run()
    return grads, ctx.logged[-1]["train_loss"]


def whole_batch_gradient() -> tuple[dict[str, torch.Tensor], float]:
    """transformers' loss of both examples in one batch (mean over the 46 targets), one backward."""
    model = tiny_llama("causal-lm", seed=0)
    loss = model(**collate(examples())).loss
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, loss.item()


def relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    diff = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in b))
    return float(diff / torch.sqrt(sum((v**2).sum() for v in b.values())))


def naive_gradient() -> dict[str, torch.Tensor]:
    """What averaging the two micro-batch means gives (each micro-batch averaged over its own tokens)."""
    model = tiny_llama("causal-lm", seed=0)
    for row in examples():
        (model(**collate([row])).loss / 2).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_target_count_follows_transformers_rules() -> None:
    batch = collate(examples())
    assert shifts_labels(tiny_llama("causal-lm")) and not shifts_labels(tiny_bert("sequence-classification"))
    assert target_count(batch, shift=True).item() == 46  # 2 + 44: position t predicts token t + 1
    assert target_count(batch, shift=False).item() == 46  # position 0 is IGNORE_INDEX in both rows here
    row = {"labels": torch.tensor([[5, 6, 7]])}
    assert target_count(row, shift=True).item() == 2 and target_count(row, shift=False).item() == 3
    assert target_count({"labels": torch.tensor([1, IGNORE_INDEX, 0])}).item() == 2  # classification: examples kept
    assert target_count({"labels": torch.rand(3, 4)}).item() == 3  # multi-label / regression: examples
    assert target_count({"columns": [{"input_ids": torch.zeros(5, 7)}]}).item() == 5  # no labels: examples


def test_accumulation_matches_the_whole_batch(tmp_path: Path) -> None:
    expected, expected_loss = whole_batch_gradient()
    acc2, loss2 = loop_gradient(1, 2, tmp_path / "acc2")
    big, loss1 = loop_gradient(2, 1, tmp_path / "big")
    assert relative(acc2, expected) <= RTOL
    assert relative(big, expected) <= RTOL
    assert relative(acc2, big) <= RTOL
    # The logged loss is the mean over the step's 46 targets too.
    assert loss2 == pytest.approx(expected_loss, rel=RTOL) and loss1 == pytest.approx(expected_loss, rel=RTOL)
    print(f"\nbatch 1 x accumulation 2 vs whole batch: relative gradient difference {relative(acc2, expected):.1e}")


def test_naive_micro_batch_mean_is_far_off() -> None:
    """The error this guards against: the mean of micro-batch means is ~its own norm away from the truth."""
    diff = relative(naive_gradient(), whole_batch_gradient()[0])
    print(f"\nmean of micro-batch means vs whole batch: relative gradient difference {diff:.3f}")
    assert diff > 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two more interpreters importing torch and transformers: ~1 min of CPU on 2 shared cores
def test_two_processes_match_the_whole_batch(tmp_path: Path) -> None:
    """2 processes x batch 1 (gloo): the targets are counted over both processes (an all-reduce)."""
    # ACCELERATE_USE_CPU=1 under torchrun: accelerate's multi-CPU mode (DDP over gloo), as the README says.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", __file__, str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected, expected_loss = whole_batch_gradient()
    for rank in (0, 1):
        grads = load_file(str(tmp_path / f"grads-{rank}.safetensors"))
        assert relative(grads, expected) <= RTOL, rank
    loss = float((tmp_path / "loss.txt").read_text())
    assert loss == pytest.approx(expected_loss, rel=RTOL)


def _ddp_worker(out: Path) -> None:
    torch.set_num_threads(1)
    grads, loss = loop_gradient(1, 1, out / "run")
    rank = int(os.environ["RANK"])
    save_file({k: v.contiguous() for k, v in grads.items()}, str(out / f"grads-{rank}.safetensors"))
    if rank == 0:
        (out / "loss.txt").write_text(repr(loss))


if __name__ == "__main__":
    _ddp_worker(Path(sys.argv[1]))
