"""Make ``accelerate launch --num_processes N --cpu -m hfx run ...`` start N processes.

accelerate's ``--cpu`` launcher runs its multi-process mode through mpirun; without
``--mpirun_hostfile`` it starts a single ordinary process (it only sets ``MASTER_ADDR``/``MASTER_PORT``),
so the run would silently train on one process. hfx notices that case and starts the N processes itself
with torch's own launcher (``torch.distributed.run``, what accelerate uses for ``--multi_gpu``), keeping
accelerate's environment (``ACCELERATE_USE_CPU``, mixed precision, the master address and port).
Each process then builds accelerate's ``Accelerator`` as usual: DDP over gloo on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["cpu_relaunch", "requested_processes"]

_RELAUNCHED = "HFX_CPU_RELAUNCHED"


def requested_processes(parent_pid: int | None = None) -> int | None:
    """``--num_processes N`` from the command line of the launching ``accelerate launch`` (Linux /proc)."""
    try:
        raw = Path(f"/proc/{parent_pid or os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not any("accelerate" in a for a in args[:3]):
        return None
    for i, arg in enumerate(args):
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and i + 1 < len(args) and args[i + 1].isdigit():
                return int(args[i + 1])
            if arg.startswith(flag + "=") and arg.split("=", 1)[1].isdigit():
                return int(arg.split("=", 1)[1])
    return None


def _single_cpu_launch(env: dict[str, str]) -> bool:
    use_cpu = env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    distributed = any(k in env for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    return use_cpu and "MASTER_ADDR" in env and not distributed and _RELAUNCHED not in env


def cpu_relaunch(argv: list[str]) -> int | None:
    """Start the requested processes and return their exit status, or None when nothing needs doing."""
    env = dict(os.environ)
    if not _single_cpu_launch(env):
        return None
    n = requested_processes()
    if n is None or n < 2:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--nnodes=1",
           f"--master_addr={env['MASTER_ADDR']}", f"--master_port={env.get('MASTER_PORT', '29500')}",
           "-m", "hfx", *argv]
    print(f"hfx: accelerate's --cpu launcher started one process; starting {n} with torch.distributed.run",
          file=sys.stderr)
    return subprocess.call(cmd, env={**env, _RELAUNCHED: "1"})
