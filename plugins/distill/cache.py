"""Offline distillation: the teacher's outputs computed once, stored as safetensors, replayed every epoch.

The teacher then never runs during training (no teacher memory, no teacher time per step), which pays
when training runs several epochs or several students learn from one teacher. The file holds one tensor
per example, named by its index (``"0"``, ``"1"``, ...), unpadded:

- embedding: the pooled embedding (D,); sequence classification: the logits (C,);
- token tasks: the logits at the example's own positions (L, V): real tokens, or target tokens for seq2seq.

Size: token tasks store L x V numbers per example (a 49,152-token vocabulary at 128 tokens is 25 MB in
float32, 12.6 MB in float16): cache encoders' outputs freely, a large-vocabulary LM only for small sets.
The metadata records the task and the teacher's input vocabulary, checked against the student.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hfx.errors import HfxError
from hfx_plugins.distill.objective import CACHE_KEY, DistillationObjective, output_positions

__all__ = ["FORMAT", "CachedTeacherDataset", "TeacherCache", "TeacherCacheCollator", "cache_teacher_outputs"]

FORMAT = "hfx-teacher-cache-v1"


def _vocab(model: nn.Module) -> int:
    return int(model.get_input_embeddings().num_embeddings)  # type: ignore[operator]


@torch.no_grad()
def cache_teacher_outputs(
    teacher: nn.Module,
    dataset: Dataset,
    collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
    path: str | Path,
    objective: DistillationObjective,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Run ``teacher`` over ``dataset`` in order and write its outputs to ``path`` (atomically)."""
    path = Path(path)
    device = next(teacher.parameters()).device
    tensors: dict[str, torch.Tensor] = {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)  # type: ignore[arg-type]
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out, _ = objective.teacher_outputs(teacher, batch)  # (B, C|D) or (B, T, V)
        positions = output_positions(batch, objective.task)  # None or (B, T) bool
        for i in range(out.shape[0]):
            row = out[i] if positions is None else out[i][positions[i]]  # (C|D,) or (L_i, V)
            tensors[str(len(tensors))] = row.to(dtype).contiguous().cpu()
    meta = {"format": FORMAT, "task": objective.task, "n": str(len(tensors)), "vocab_size": str(_vocab(teacher))}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class TeacherCache:
    """Read access to a cache file, one example at a time (memory-mapped: nothing is loaded up front).

    Raises:
        HfxError: ``path`` does not exist or is not an hfx teacher cache.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise HfxError(f"teacher cache {str(path)!r} does not exist; write it with cache_teacher_outputs first")
        self._file = safe_open(str(path), framework="pt")
        meta = self._file.metadata() or {}
        if meta.get("format") != FORMAT:
            raise HfxError(f"{path} is not an hfx teacher cache (format {meta.get('format')!r}); rebuild it")
        self.task, self.n, self.vocab_size = meta["task"], int(meta["n"]), int(meta["vocab_size"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._file.get_tensor(str(i))

    def check_student(self, student: nn.Module, task: str) -> None:
        """The cache must be of the student's task and tokenizer (input vocabulary).

        Raises:
            HfxError: the cache is of another task, or of another vocabulary size than the student's.
        """
        if self.task != task:
            raise HfxError(f"the teacher cache holds {self.task} outputs but the student is trained for {task}")
        if _vocab(student) != self.vocab_size:
            raise HfxError(f"the teacher cache was made with a vocabulary of {self.vocab_size} tokens, the student has "
                           f"{_vocab(student)}; teacher and student must share the tokenizer")


class CachedTeacherDataset(Dataset):
    """``dataset`` with each example's cached teacher output added under ``teacher_logits``.

    Raises:
        HfxError: the cache and the data set differ in length.
    """

    def __init__(self, dataset: Any, cache: TeacherCache) -> None:
        if len(dataset) != len(cache):
            raise HfxError(f"the teacher cache has {len(cache)} examples, the data set {len(dataset)}; "
                           "rebuild the cache for this data set")
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], CACHE_KEY: self.cache[i]}


class TeacherCacheCollator:
    """Collate with ``collate_fn``, then lay the cached outputs onto the batch's padded positions."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any], task: str) -> None:
        self.collate_fn, self.task = collate_fn, task

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The wrapped collator's batch plus the examples' cached teacher outputs under ``CACHE_KEY``.

        Per-example outputs stack to (B, C) or (B, D); per-token outputs are placed at each example's output
        positions in a (B, T, V) tensor (zeros elsewhere, masked by the loss).

        Raises:
            HfxError: an example's cached rows do not match its output positions (a cache from another
                tokenization).
        """
        cached = [ex.pop(CACHE_KEY) for ex in examples]
        batch = dict(self.collate_fn(examples))
        positions = output_positions(batch, self.task)  # None or (B, T) bool
        if positions is None:
            batch[CACHE_KEY] = torch.stack(cached)  # (B, C|D)
            return batch
        B, T = positions.shape
        out = torch.zeros(B, T, cached[0].shape[-1], dtype=cached[0].dtype)  # (B, T, V); padding stays 0, masked
        for i, rows in enumerate(cached):
            if int(positions[i].sum()) != rows.shape[0]:
                raise HfxError(f"cached teacher outputs cover {rows.shape[0]} tokens but the example has "
                               f"{int(positions[i].sum())}; rebuild the cache with the same tokenization")
            out[i, positions[i]] = rows
        batch[CACHE_KEY] = out
        return batch
