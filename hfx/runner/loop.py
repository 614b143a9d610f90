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
- The loss of one optimizer step is the mean over *all* its targets (tokens for a language model, examples
  for a classifier), across accumulated micro-batches and processes, as transformers' Trainer does since
  4.46 (``num_items_in_batch``). The step's micro-batches are fetched first, their targets counted and
  summed over processes (an all-reduce), then each micro-batch's mean loss is weighted by its share of
  them. Averaging micro-batch means instead over-weights the tokens of short micro-batches: with 2 and 44
  target tokens the gradient is off by more than its own norm.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedModel, get_scheduler

from hfx.data.collate import IGNORE_INDEX
from hfx.errors import HfxError
from hfx.runner import fsdp
from hfx.runner.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["EpochSampler", "TrainLoop", "default_loss", "shifts_labels", "target_count"]

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
CountFn = Callable[[dict[str, Any]], "torch.Tensor | int | float"]


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)``.

    The method is deliberately not called ``set_epoch``: accelerate calls ``set_epoch`` with its own count
    of passes, which restarts at 0 in a resumed process.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def use_epoch(self, epoch: int) -> None:
        """Draw the permutation of pass ``epoch`` next (the seed is ``seed * 1_000_003 + epoch``)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def default_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss, ``model(**batch).loss``: a () tensor (transformers computes it from labels)."""
    return model(**batch).loss


def shifts_labels(model: nn.Module) -> bool:
    """Whether ``model``'s loss predicts label ``t + 1`` at position ``t`` (a causal language model).

    transformers' rule (``Trainer._loss_shifts_labels``): the outermost transformers model's ``loss_type``
    maps to ``ForCausalLMLoss`` and the model is not an encoder-decoder.
    """
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            is_causal = LOSS_MAPPING.get(getattr(module, "loss_type", None) or "") is ForCausalLMLoss
            return is_causal and not getattr(module.config, "is_encoder_decoder", False)
    return False


def _batch_size(value: Any) -> int:
    """The first dimension of the first tensor found in a (nested) batch; 1 when there is none."""
    if torch.is_tensor(value):
        return int(value.shape[0]) if value.dim() else 1
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        if torch.is_tensor(item) or isinstance(item, (dict, list, tuple)):
            return _batch_size(item)
    return 1


def target_count(batch: dict[str, Any], shift: bool = False) -> torch.Tensor:
    """How many targets a mean loss of ``batch`` averages over (what transformers calls num_items_in_batch).

    Integer ``labels`` count their entries that are not -100 (2-D token labels of a causal LM without
    their first column when ``shift``: position ``t`` predicts token ``t + 1``); ``shift_labels`` are
    counted as given. Float labels (regression, multi-label) and batches without labels count examples.

    Args:
        batch: One micro-batch; ``labels`` (B,) or (B, T) when present.
        shift: The loss shifts 2-D labels by one position (see :func:`shifts_labels`).

    Returns:
        A 0-d float tensor.
    """
    labels = batch.get("shift_labels")
    if labels is None:
        labels = batch.get("labels")
        if torch.is_tensor(labels) and shift and labels.dim() >= 2 and not labels.is_floating_point():
            labels = labels[..., 1:]  # (B, T-1)
    if not torch.is_tensor(labels):
        return torch.tensor(float(_batch_size(batch)))
    if labels.is_floating_point():
        return torch.tensor(float(labels.shape[0]))  # one target per example; the mean over C is uniform
    return (labels != IGNORE_INDEX).sum().float()


class TrainLoop:
    """Train ``model`` on ``train_dataset`` for ``ctx.run.train.max_steps`` optimizer steps.

    Args:
        ctx: The run context (config, accelerator, run folder).
        model: The model to train; only parameters with ``requires_grad`` are optimised.
        train_dataset: Map-style data set of examples that ``collate_fn`` turns into a batch dict.
        collate_fn: Builds a batch of tensors from a list of examples.
        loss_fn: ``loss_fn(prepared_model, batch) -> scalar``, the *mean* over the batch's targets;
            defaults to the model's own loss.
        count_fn: ``count_fn(batch) ->`` how many targets ``loss_fn`` averages over; defaults to
            :func:`target_count` (tokens of 2-D labels, shifted for a causal LM; else examples).
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
        count_fn: CountFn | None = None,
        evaluate: Callable[[], dict[str, float]] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        self.ctx, self.loss_fn, self.evaluate = ctx, loss_fn, evaluate
        self.count_fn = count_fn or functools.partial(target_count, shift=shifts_labels(model))
        t = ctx.run.train
        self.cfg = t
        acc = ctx.accelerator
        params = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if not any(p.requires_grad for g in params for p in g["params"]):
            raise HfxError("the model has no trainable parameters; check the plugin config (e.g. target_modules)")
        self.sharded = fsdp.wanted(t, acc.num_processes)
        if self.sharded:  # before the optimizer exists: fully_shard replaces the parameters (hfx.runner.fsdp)
            model, params = fsdp.shard_for_loop(acc, model, params, t.fsdp_cpu_offload)
            ctx.sharded.append(model)
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
        if self.sharded and fsdp.is_sharded(model):  # prepare() would wrap it in DDP as well
            self.model = model
            self.prepared_optimizer, self.loader = acc.prepare(self.optimizer, loader)
        else:
            self.model, self.prepared_optimizer, self.loader = acc.prepare(model, self.optimizer, loader)

    def _resume(self) -> int:
        ckpt = latest_checkpoint(self.ctx.run_dir.checkpoints) if self.ctx.run_dir.resumed else None
        if ckpt is None:
            return 0
        step = load_checkpoint(ckpt, self.raw_model, self.optimizer, self.scheduler, self.ctx.accelerator.process_index,
                               restore=fsdp.restore_state if self.sharded else None)
        self.ctx.run_dir.truncate_metrics(step)
        self.ctx.print(f"resumed from {ckpt} (step {step})")
        return step

    def _micro_batches(self, micro: int, per_epoch: int) -> Iterator[dict[str, Any]]:
        """Micro-batches from number ``micro`` on, across epochs (epoch ``e`` is the permutation ``(seed, e)``)."""
        while True:
            epoch, offset = divmod(micro, per_epoch)
            self.sampler.use_epoch(epoch)
            batches = self.ctx.accelerator.skip_first_batches(self.loader, offset) if offset else self.loader
            for batch in batches:
                micro += 1
                yield batch

    def _step_targets(self, group: list[dict[str, Any]], step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Targets of each micro-batch of this process, and of the whole step summed over processes."""
        acc = self.ctx.accelerator
        counts = [torch.as_tensor(self.count_fn(b), dtype=torch.float32, device=acc.device) for b in group]
        total = acc.reduce(torch.stack(counts).sum(), reduction="sum")  # all-reduce: every process's targets
        if total.item() <= 0:
            raise HfxError(f"optimizer step {step} has no target (every label is -100); check the data and "
                           "data.max_length (a prompt longer than max_length leaves no answer token)")
        return counts, total

    def _check_loss(self, loss: torch.Tensor, n: torch.Tensor, step: int) -> None:
        """Stop every process together when one process's loss is NaN or infinite (before its backward)."""
        acc = self.ctx.accelerator
        bad_here = bool(n > 0) and not bool(torch.isfinite(loss.detach()))
        bad = acc.reduce(torch.tensor(float(bad_here), device=acc.device), reduction="sum") if acc.num_processes > 1 \
            else torch.tensor(float(bad_here))
        if bad.item() > 0:
            value = loss.item() if bad_here else "not finite on another process"
            raise HfxError(f"training loss is {value} at step {step}; lower train.learning_rate "
                           "or check the data (empty texts, all labels ignored)")

    def run(self) -> dict[str, float]:
        """Train to ``max_steps``; return ``{"train_loss": mean loss over the targets of the last logging window}``.

        Raises:
            HfxError: the training data gives no batch, or the loss is not finite (on any process).
        """
        acc, t = self.ctx.accelerator, self.cfg
        step = self._resume()
        per_epoch = len(self.loader)
        if per_epoch == 0:
            raise HfxError("the training data gives no batch; add data or lower train.batch_size")
        stream = self._micro_batches(step * t.gradient_accumulation_steps, per_epoch)
        # accelerate divides each micro-batch loss by the accumulation steps and DDP averages gradients over
        # processes; multiplying by both gives sum(loss_i * n_i) / total, the mean over the step's targets.
        undo = float(t.gradient_accumulation_steps * acc.num_processes)
        window: list[torch.Tensor] = []  # (2,) per micro-batch: summed loss over its targets, target count
        last_loss = math.nan
        self.model.train()
        bar = self.ctx.progress(total=t.max_steps, initial=step, desc="train")
        try:  # closed on errors too, so an error line never lands on the bar's line
            while step < t.max_steps:
                group = list(itertools.islice(stream, t.gradient_accumulation_steps))
                counts, total = self._step_targets(group, step + 1)
                for batch, n in zip(group, counts, strict=True):
                    with acc.accumulate(self.model):
                        loss = self.loss_fn(self.model, batch)  # mean over this micro-batch's n targets
                        self._check_loss(loss, n, step + 1)
                        # A micro-batch without targets has a NaN mean (0 / 0): it adds nothing, but its
                        # backward still runs so that DDP's gradient all-reduce happens on every process.
                        mean = loss if n > 0 else loss.nan_to_num(0.0, 0.0, 0.0)
                        acc.backward(mean * (n * undo / total))
                        if acc.sync_gradients and t.max_grad_norm > 0:
                            norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: DTensor
                            if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                                raise HfxError(f"gradient norm is {float(norm)} at step {step + 1} (weights not "
                                               "updated); lower train.learning_rate or check the data")
                        self.prepared_optimizer.step()
                        self.prepared_optimizer.zero_grad()
                    window.append(torch.stack([mean.detach().float() * n, n]))
                if not acc.sync_gradients:
                    raise RuntimeError("accelerate did not sync gradients at the end of an optimizer step")
                self.scheduler.step()
                step += 1
                bar.update(1)
                checkpoint_due = bool(t.save_every) and step % t.save_every == 0
                # Also log at every checkpoint: a resumed run starts with an empty window, so windows must
                # end at checkpoints for it to log exactly what the uninterrupted run logs.
                if step % t.log_every == 0 or step == t.max_steps or checkpoint_due:
                    # Mean over every target of this window's micro-batches, on every process.
                    summed, targets = acc.reduce(torch.stack(window).sum(0), reduction="sum").tolist()
                    last_loss = summed / targets
                    window.clear()
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                    self.ctx.log({"step": step, "train_loss": last_loss, "lr": self.scheduler.get_last_lr()[0]})
                if self.evaluate is not None and t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
                    self.model.eval()
                    self.ctx.log({"step": step, **{f"eval_{k}": v for k, v in self.evaluate().items()}})
                    self.model.train()
                if checkpoint_due:
                    self._checkpoint(step)
        finally:
            bar.close()
        self.model.eval()
        return {"train_loss": last_loss}

    def _checkpoint(self, step: int) -> None:
        acc = self.ctx.accelerator
        # Sharded: every rank hands its slices to rank 0, which writes the same files as an unsharded run.
        states = fsdp.gathered_state(self.raw_model, self.optimizer) if self.sharded else None
        if acc.is_main_process:
            save_checkpoint(self.ctx.run_dir.checkpoints, step, self.raw_model, self.optimizer, self.scheduler,
                            keep=self.cfg.keep_checkpoints, world_size=acc.num_processes, states=states)
        acc.wait_for_everyone()
