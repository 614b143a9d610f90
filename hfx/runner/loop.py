"""The training loop every recipe shares, built on accelerate's ``Accelerator``.

It does device placement, gradient accumulation, DDP and mixed precision through accelerate, and adds
what ``hfx run`` promises on top: a seeded data order that a resumed run replays exactly, atomic
checkpoints, NaN detection, metrics logging and a progress bar.

Departures from the plain accelerate recipe, and why:

- The learning-rate scheduler is *not* passed to ``accelerator.prepare``: a prepared scheduler steps once
  per process, so a 2-process run would decay its learning rate twice as fast as one process with twice
  the gradient accumulation. Here it steps once per optimizer step, whatever the process count.
- Gradient accumulation does not sync at the end of an epoch (``sync_with_dataloader=False``): an
  optimizer step is always exactly ``gradient_accumulation_steps`` micro-batches, so step counts, and
  therefore checkpoints and resumption, do not depend on the data set size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import get_scheduler

from hfx.errors import HfxError
from hfx.runner.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["EpochSampler", "TrainLoop", "default_loss"]

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``.

    The method is deliberately not called ``set_epoch``: accelerate calls ``set_epoch`` with its own count
    of passes, which restarts at 0 in a resumed process.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def default_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss: ``model(**batch).loss`` (transformers computes it when labels are given)."""
    return model(**batch).loss


class TrainLoop:
    """Train ``model`` on ``train_dataset`` for ``ctx.run.train.max_steps`` optimizer steps.

    Args:
        ctx: The run context (config, accelerator, run folder).
        model: The model to train; only parameters with ``requires_grad`` are optimised.
        train_dataset: Map-style data set of examples that ``collate_fn`` turns into a batch dict.
        collate_fn: Builds a batch of tensors from a list of examples.
        loss_fn: ``loss_fn(prepared_model, batch) -> scalar``; defaults to the model's own loss.
        evaluate: Called every ``train.eval_every`` steps; returns metrics to log.
        param_groups: Optimizer parameter groups (e.g. LoRA+); defaults to all trainable parameters.
    """

    def __init__(
        self,
        ctx: Any,
        model: nn.Module,
        train_dataset: Dataset,
        collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
        *,
        loss_fn: LossFn = default_loss,
        evaluate: Callable[[], dict[str, float]] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        self.ctx, self.loss_fn, self.evaluate = ctx, loss_fn, evaluate
        t = ctx.run.train
        self.cfg = t
        acc = ctx.accelerator
        params = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if not any(p.requires_grad for g in params for p in g["params"]):
            raise HfxError("the model has no trainable parameters; check the plugin config (e.g. target_modules)")
        self.optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        self.scheduler = get_scheduler(t.lr_scheduler, self.optimizer, t.warmup_steps, t.max_steps)
        self.sampler = EpochSampler(len(train_dataset), ctx.run.seed)  # type: ignore[arg-type]
        drop_last = len(train_dataset) >= t.batch_size * acc.num_processes  # type: ignore[arg-type]
        # A generator of its own: every new iterator of a DataLoader draws a base seed from ``generator``,
        # which defaults to the *global* torch RNG. A resumed run opens one iterator more than an
        # uninterrupted one (mid-epoch), so that draw would shift every later dropout mask.
        loader = DataLoader(train_dataset, batch_size=t.batch_size, sampler=self.sampler,
                            collate_fn=collate_fn, drop_last=drop_last,
                            generator=torch.Generator().manual_seed(ctx.run.seed))
        self.raw_model = model
        self.model, self.prepared_optimizer, self.loader = acc.prepare(model, self.optimizer, loader)

    def _resume(self) -> int:
        ckpt = latest_checkpoint(self.ctx.run_dir.checkpoints) if self.ctx.run_dir.resumed else None
        if ckpt is None:
            return 0
        step = load_checkpoint(ckpt, self.raw_model, self.optimizer, self.scheduler, self.ctx.accelerator.process_index)
        self.ctx.run_dir.truncate_metrics(step)
        self.ctx.print(f"resumed from {ckpt} (step {step})")
        return step

    def run(self) -> dict[str, float]:
        """Train to ``max_steps``; return ``{"train_loss": mean loss of the last logging window}``."""
        acc, t = self.ctx.accelerator, self.cfg
        step = self._resume()
        per_epoch = len(self.loader)
        if per_epoch == 0:
            raise HfxError("the training data gives no batch; add data or lower train.batch_size")
        micro = step * t.gradient_accumulation_steps
        window: list[torch.Tensor] = []
        last_loss = math.nan
        self.model.train()
        bar = self.ctx.progress(total=t.max_steps, initial=step, desc="train")
        try:  # closed on errors too, so an error line never lands on the bar's line
            while step < t.max_steps:
                epoch, offset = divmod(micro, per_epoch)
                self.sampler.use_epoch(epoch)
                batches = acc.skip_first_batches(self.loader, offset) if offset else self.loader
                for batch in batches:
                    with acc.accumulate(self.model):
                        loss = self.loss_fn(self.model, batch)
                        if not torch.isfinite(loss):
                            raise HfxError(
                                f"training loss is {loss.item()} at step {step + 1}; lower train.learning_rate "
                                "or check the data (empty texts, all labels ignored)"
                            )
                        acc.backward(loss)
                        if acc.sync_gradients and t.max_grad_norm > 0:
                            acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                        self.prepared_optimizer.step()
                        self.prepared_optimizer.zero_grad()
                    micro += 1
                    window.append(loss.detach())
                    if not acc.sync_gradients:
                        continue
                    self.scheduler.step()
                    step += 1
                    bar.update(1)
                    checkpoint_due = bool(t.save_every) and step % t.save_every == 0
                    # Also log at every checkpoint: a resumed run starts with an empty window, so windows must
                    # end at checkpoints for it to log exactly what the uninterrupted run logs.
                    if step % t.log_every == 0 or step == t.max_steps or checkpoint_due:
                        # Mean over this window's micro-batches, then over processes.
                        last_loss = acc.reduce(torch.stack(window).mean(), reduction="mean").item()
                        window.clear()
                        bar.set_postfix(loss=f"{last_loss:.4f}")
                        self.ctx.log({"step": step, "train_loss": last_loss, "lr": self.scheduler.get_last_lr()[0]})
                    if self.evaluate is not None and t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
                        self.model.eval()
                        self.ctx.log({"step": step, **{f"eval_{k}": v for k, v in self.evaluate().items()}})
                        self.model.train()
                    if checkpoint_due:
                        self._checkpoint(step)
                    if step >= t.max_steps:
                        break
        finally:
            bar.close()
        self.model.eval()
        return {"train_loss": last_loss}

    def _checkpoint(self, step: int) -> None:
        acc = self.ctx.accelerator
        if acc.is_main_process:
            save_checkpoint(self.ctx.run_dir.checkpoints, step, self.raw_model, self.optimizer, self.scheduler,
                            keep=self.cfg.keep_checkpoints, world_size=acc.num_processes)
        acc.wait_for_everyone()
