"""``train.fsdp=true`` for the training plugins beyond lora and finetune: 2 ranks equal 1 process, or a refusal.

Each plugin is run once with two ranks (FSDP2 over gloo, one ``torch.distributed.run`` launch of this file as
its own worker, as in test_fsdp.py) and once in this process with ``gradient_accumulation_steps=2``: step ``s``
of both runs sees the same two micro-batches (accelerate gives batch ``i`` to rank ``i % 2``; every epoch
here has an even number of batches). Expected: every tensor the run saves under ``artifacts/`` and every
logged training loss equal within 1e-4 (test_fsdp.py's bound; FSDP2's reduce-scatter averages two ranks'
gradients where one process sums two halves, which round alike). No dropout anywhere (tiny models built with
dropout 0, LoRA dropout 0), so the two ranks draw nothing the single process would not.

Covered: embed (MNRL: in-batch negatives per micro-batch in both runs), reward, dpo (LoRA policy, reference =
adapter disabled), distill (student sharded, teacher whole on every rank) and QLoRA (``plugin=[quant,lora]``:
quant's packed codes are buffers, so FSDP2 leaves them whole on every rank; the adapters and float parameters
are sharded). Refused in one line: qat (its recipe deep-copies the model), ppo and grpo (trainers of their own,
tested in test_fsdp.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4
WORDS = ["the function returns", "a class has", "import the module", "print the list", "a value is", "the loop ends"]
ENV = {**{k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}, "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _jobs(root: Path, llama: Path, bert0: Path) -> dict[str, list[str]]:
    """Per plugin, the overrides both runs share (batches per epoch even: 8, 6, 6, 6 and 4)."""
    # The reward tests' learnable toy rankings, loaded from their file (the suite imports tests by path).
    spec = importlib.util.spec_from_file_location(
        "reward_test_training", Path(__file__).parents[1] / "plugins" / "reward" / "test_training.py")
    helpers = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(helpers)  # type: ignore[union-attr]
    toy_rankings = helpers.toy_rankings

    reward = root / "reward_data"
    reward.mkdir()
    for split, (n, seed) in {"train": (24, 0), "test": (8, 1)}.items():
        (reward / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rankings(n, seed)))
    rankings = root / "rankings"
    rankings.mkdir()
    for split, prompts in (("train", WORDS[:4]), ("test", WORDS[4:])):
        rows = [{"prompt": p + " ", "completions": ["good and great", "fine", "bad and sad"], "ranking": [0, 1, 2]}
                for p in prompts]
        (rankings / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["train.log_every=1", "train.max_steps=3"]
    return {
        "embed": ["plugin=embed", f"model={bert0}", "embed.mini_batch_size=2", "data.max_train_samples=32",
                  "data.max_eval_samples=16", "train.batch_size=4", "train.learning_rate=1e-3", *common],
        "reward": ["plugin=reward", f"model={llama}", f"data.path={reward}", "train.batch_size=2",
                   "reward.max_length=32", *common],
        "dpo": ["plugin=dpo", f"model={llama}", f"data.path={rankings}", "train.batch_size=1", "dpo.pairs=all",
                "dpo.eval_prompts=2", "dpo.max_new_tokens=4", "lora.r=2", "lora.target_modules=[q_proj,v_proj]",
                "train.learning_rate=1e-2", *common],
        "distill": ["plugin=distill", f"model={bert0}", "train.batch_size=4", "data.max_train_samples=48",
                    "distill.eval_sentences=20", "train.eval_batch_size=32", "distill.layers=[]",
                    "distill.speed_repeats=1", "distill.baseline=false", *common],
        "qlora": ["plugin=[quant,lora]", f"model={llama}", "data.path=instructions", "train.batch_size=2",
                  "data.max_train_samples=16", "data.max_eval_samples=8", "lora.eval_generations=0",
                  "train.learning_rate=1e-2", *common],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_folder(output_dir: Path) -> Path:
    (folder,) = [p for p in output_dir.iterdir() if p.is_dir()]
    return folder


def _tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted((run_dir / "artifacts").rglob("*.safetensors")):
        rel = path.relative_to(run_dir / "artifacts")
        out.update({f"{rel}:{k}": v for k, v in load_file(str(path)).items()})
    return out


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if "train_loss" in r]


@pytest.fixture(scope="module")
def pairs(tiny_llama_dir: Path, bert0_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each plugin's 2-rank run folder (one launch) and 1-process run folder."""
    from hfx.runner.run import run

    root = tmp_path_factory.mktemp("fsdp-plugins")
    jobs = _jobs(root, tiny_llama_dir, bert0_dir)
    two = [[*args, "train.fsdp=true", f"output_dir={root / name / 'two'}"] for name, args in jobs.items()]
    log = root / "launch.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, *map(json.dumps, two)]
    with log.open("w") as fh:
        done = subprocess.run(cmd, env=ENV, stdout=fh, stderr=subprocess.STDOUT, timeout=900)
    assert done.returncode == 0, log.read_text()[-4000:]
    out: dict[str, Any] = {}
    for name, args in jobs.items():
        with contextlib.redirect_stdout(io.StringIO()):
            one = run([*args, "train.gradient_accumulation_steps=2", f"output_dir={root / name / 'one'}"])
        out[name] = (_run_folder(root / name / "two"), one.run_dir)
    return out


@pytest.mark.parametrize("plugin", ["embed", "reward", "dpo", "distill", "qlora"])
def test_two_ranks_equal_one_process(pairs: dict[str, Any], plugin: str) -> None:
    two, one = pairs[plugin]
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    t2, t1 = _tensors(two), _tensors(one)
    assert t1 and t2.keys() == t1.keys() and all(t2[k].shape == t1[k].shape for k in t1)  # whole, not halves
    diff = max((t2[k].float() - t1[k].float()).abs().max().item() for k in t1)
    assert diff <= ATOL
    s1 = json.loads((one / "summary.json").read_text())
    changed = [k for k, v in s1["after"].items() if k in s1["before"] and v != s1["before"][k]]
    assert changed  # the runs trained: the equality is not that of two untouched models
    l2, l1 = _losses(two), _losses(one)
    assert len(l2) == 3 and l2 == pytest.approx(l1, abs=ATOL, rel=0)
    print(f"\n{plugin}: 2 ranks (FSDP) vs 1 process x 2 accumulation, max |saved tensor difference| {diff:.1e} "
          f"over {len(t1)} tensors; losses {l2}")


def test_qat_is_refused_in_one_line() -> None:
    from hfx import registry
    from hfx.errors import HfxError
    from hfx.runner.fsdp import check_recipe

    ctx = SimpleNamespace(run=SimpleNamespace(train=SimpleNamespace(fsdp=True)),
                          accelerator=SimpleNamespace(num_processes=2), sharded=[])
    with pytest.raises(HfxError, match="not supported by plugin 'qat': its recipe deep-copies") as err:
        check_recipe(ctx, "qat", registry.resolve(registry.get("qat").recipe))
    assert "\n" not in str(err.value)


if __name__ == "__main__":  # the worker: python -m torch.distributed.run ... tests/hfx/test_fsdp_plugins.py JOB ...
    torch.set_num_threads(1)
    from hfx.runner.run import run

    for job in sys.argv[1:]:
        run(json.loads(job))
