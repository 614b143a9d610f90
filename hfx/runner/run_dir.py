"""The run folder: ``runs/<time>-<plugins>/`` with everything a run leaves behind.

::

    config.yaml      the resolved config (every default filled in)
    metrics.jsonl    one JSON object per logged step: {"step": 10, "train_loss": ...}
    before.json      evaluation before training (reused when a run is resumed)
    checkpoints/     step-XXXXXX/ folders, written atomically
    artifacts/       what the recipe saved, in Hugging Face formats
    curves.png       training and evaluation curves
    summary.json     final metrics; written last, so its presence means the run completed
    .lock            while a run is using the folder: its process id and host (created with O_EXCL)

A run that fails before its first checkpoint removes its folder; one that fails later keeps it (without
``summary.json``) so that ``resume=true`` can continue it. A second run started into a folder that a
live process holds refuses; the lock of a process that died (``kill -9``) is taken over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError
from hfx.io import atomic_write_json, atomic_write_text

__all__ = ["RunDir"]


@dataclass
class RunDir:
    """One run's folder: config.yaml, metrics.jsonl, before.json, checkpoints/, artifacts/, summary.json (last).

    Attributes:
        path: The folder.
        resumed: Whether this run continues an earlier one from its checkpoints.
        is_main: Whether this process writes (accelerate's main process).
        locked: Whether this process holds the folder's ``.lock``.
    """

    path: Path
    resumed: bool = False
    is_main: bool = True
    locked: bool = False

    @classmethod
    def plan(cls, output_dir: str, run_dir: str, resume: bool, plugins: list[str], stamp: str) -> RunDir:
        """Choose the folder (nothing is created yet, so bad input never leaves a folder behind).

        Args:
            output_dir: Parent of new run folders.
            run_dir: An exact folder to use ("" for a new one under ``output_dir``).
            resume: Continue an unfinished run from its last checkpoint.
            plugins: The run's plugin names (the folder name ends with them, joined by "+").
            stamp: The time part of a new folder's name (:meth:`stamp`).

        Raises:
            HfxError: ``run_dir`` holds a finished run, or nothing to resume (no checkpoint) was found.
        """
        tag = "+".join(plugins)
        if run_dir:
            path = Path(run_dir)
            if resume and not (path / "checkpoints").is_dir():
                raise HfxError(f"run_dir={run_dir} has no checkpoints to resume; drop resume=true or pick another run")
            if not resume and (path / "summary.json").exists():
                raise HfxError(f"run_dir={run_dir} holds a finished run; choose a new folder")
            return cls(path, resumed=resume)
        if resume:
            found = [
                p for p in sorted(Path(output_dir).glob(f"*-{tag}"))
                if not (p / "summary.json").exists() and (p / "checkpoints").is_dir()
            ]
            if not found:
                raise HfxError(
                    f"resume=true but no unfinished run of {tag!r} with a checkpoint is in {output_dir}/; "
                    "set train.save_every=N so runs leave checkpoints, or drop resume=true"
                )
            return cls(found[-1], resumed=True)
        return cls(Path(output_dir) / f"{stamp}-{tag}")

    @staticmethod
    def stamp() -> str:
        """The local time as ``YYYYmmdd-HHMMSS``, the first part of a new run folder's name."""
        return time.strftime("%Y%m%d-%H%M%S")

    @property
    def checkpoints(self) -> Path:
        """The folder of ``step-N`` checkpoints."""
        return self.path / "checkpoints"

    @property
    def artifacts(self) -> Path:
        """The folder the recipe saves its outputs in (Hugging Face formats)."""
        return self.path / "artifacts"

    @property
    def lock_file(self) -> Path:
        """``.lock``: the pid and host of the live run that holds the folder."""
        return self.path / ".lock"

    def create(self, cfg: DictConfig) -> None:
        """Make the folder, take its lock and write config.yaml (main process only).

        Raises:
            HfxError: another live run holds the folder.
        """
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.acquire()
        atomic_write_text(self.path / "config.yaml", OmegaConf.to_yaml(cfg))

    def acquire(self) -> None:
        """Create ``.lock`` with O_EXCL; take over the lock of a process on this host that no longer exists.

        Raises:
            HfxError: a live process holds the folder, or another run took it at the same moment.
        """
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(self.lock_file)
                if holder is None and _age(self.lock_file) < 5.0:  # being written by a run starting right now
                    holder = {"pid": "?", "host": "this host", "started": "just now"}
                if holder is not None and (holder["pid"] == "?" or _alive(holder)):
                    raise HfxError(f"run folder {str(self.path)!r} is in use by process {holder.get('pid')} on "
                                   f"{holder.get('host')} (since {holder.get('started')}); wait for it to end or "
                                   "choose another run_dir") from None
                self.lock_file.unlink(missing_ok=True)  # its process died: take over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self.locked = True
            return
        raise HfxError(f"cannot lock run folder {str(self.path)!r}: another run took it at the same moment")

    def release(self) -> None:
        """Remove this run's lock (after summary.json, or after a failure)."""
        if self.locked:
            self.lock_file.unlink(missing_ok=True)
            self.locked = False

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (main process only)."""
        if self.is_main:
            with (self.path / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl, in order (empty when there is none yet)."""
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step`` (a resumed run logs them again, exactly as an uninterrupted one)."""
        if self.is_main:
            kept = [r for r in self.metrics() if r.get("step", 0) <= step]
            atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` as ``name`` in the folder, atomically (main process only); summary.json releases the lock."""
        if self.is_main:
            atomic_write_json(self.path / name, obj)
            if name == "summary.json":  # written last: the run is complete, the folder is free
                self.release()

    def read_json(self, name: str) -> Any:
        """The JSON file ``name`` of the folder, or None when it does not exist."""
        path = self.path / name
        return json.loads(path.read_text()) if path.exists() else None

    def discard_if_empty(self) -> None:
        """After a failure: remove the folder unless it holds a checkpoint worth resuming."""
        if not self.locked:  # never remove a folder this run does not hold (another run's, or not created)
            return
        if self.is_main and self.path.exists() and not any(self.checkpoints.glob("step-*")):
            shutil.rmtree(self.path, ignore_errors=True)
        self.release()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # half-written by a process killed while creating it, or just removed


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's process still runs (another host: assume it does)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:
        return True
    return int(holder.get("pid", -1)) > 0
