"""The sections every ``hfx run`` config has, whatever the plugin.

A plugin adds its own section under its name (``lora.r``, ``quant.bits``); these are the shared ones:
top-level run settings, ``data`` (:class:`hfx.data.config.DataConfig`) and ``train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hfx.data.config import DataConfig
from hfx.errors import HfxError

__all__ = ["RunConfig", "TrainConfig"]

_PRECISIONS = ("no", "bf16", "fp16", "auto")  # hfx.precision.PRECISIONS, kept here without importing torch
_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every recipe (read by :class:`hfx.runner.loop.TrainLoop`)."""

    max_steps: int = 100
    """Optimizer steps to take (one step = gradient_accumulation_steps micro-batches)."""
    batch_size: int = 16
    """Examples per micro-batch on each process."""
    gradient_accumulation_steps: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    learning_rate: float = 5e-5
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from 0."""
    lr_scheduler: str = "linear"
    """Schedule after warm-up: linear, cosine, constant or constant_with_warmup."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value (0 = no clipping)."""
    eval_every: int = 0
    """Evaluate every N optimizer steps during training (0 = only before and after)."""
    eval_before: bool = True
    """Evaluate the untrained model first (summary.json's `before`); false skips it when only the trained model
    matters (transformers' Trainer does not evaluate first either). An evaluation that draws random numbers (a
    DataLoader draws its seed) shifts the random stream, so training then differs by that draw."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps (0 = none); `resume=true` continues from the last one."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep on disk."""
    log_every: int = 10
    """Log the training loss every N optimizer steps."""
    mixed_precision: str = "no"
    """accelerate's mixed precision: no (float32), bf16, fp16 (CUDA only), or auto: bf16 where the device computes it
    natively (CUDA with bf16; a CPU whose bf16 matmul a short probe measures faster than fp32), float32 elsewhere.
    Master weights, optimizer state, LoRA A/B and quantization scales stay float32; summary.json says what was used."""
    eval_batch_size: int = 64
    """Examples per batch during evaluation."""
    fsdp: bool = False
    """Shard parameters, gradients and optimizer state across processes (FSDP2, one unit per transformer block),
    launched with `torchrun --nproc_per_node N -m hfx run ...`: on CPU hfx applies torch's fully_shard over gloo
    (tested), on CUDA accelerate's FSDP2 plugin (untested here). Frozen weights are sharded too; the saved model
    or adapter is gathered whole. In one process: a warning, then plain training."""
    fsdp_cpu_offload: bool = False
    """With train.fsdp on CUDA: keep parameter shards, gradients and optimizer state in CPU memory between uses
    (slower, less GPU memory). No effect on CPU, where they already are."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise HfxError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.mixed_precision not in _PRECISIONS:
            raise HfxError(f"train.mixed_precision must be one of {', '.join(_PRECISIONS)}, got {self.mixed_precision!r}")
        if self.lr_scheduler not in _SCHEDULERS:
            raise HfxError(f"train.lr_scheduler must be one of {', '.join(_SCHEDULERS)}, got {self.lr_scheduler!r}")
        if self.learning_rate < 0:
            raise HfxError(f"train.learning_rate must be >= 0, got {self.learning_rate}")


@dataclass
class RunConfig:
    """Top-level settings of one ``hfx run``."""

    plugin: list[str] = field(default_factory=list)
    """Plugins to apply, in order (`plugin=lora` or `plugin=[quant,lora]`); the last one's recipe drives the run."""
    preset: str = "default"
    """Preset YAML loaded from each plugin's configs/ folder before --config and the overrides."""
    model: str = "minilm"
    """Hub id, local folder, or built-in offline name: minilm, smollm2-135m, minilm2minilm."""
    task: str = "auto"
    """auto (from the model family), sequence-classification, causal-lm, seq2seq-lm, masked-lm or base."""
    seed: int = 0
    """Seed for every random number generator (weights init, data order, dropout)."""
    output_dir: str = "runs"
    """Folder under which each run gets runs/<time>-<plugin>/."""
    run_dir: str = ""
    """Exact run folder to use (empty = a new one under output_dir; with resume=true, the one to resume)."""
    resume: bool = False
    """Continue the newest unfinished run of these plugins from its last checkpoint."""
    trust_remote_code: bool = False
    """Allow model repositories to run their own Python code (off unless you trust the source)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the examples come from and which columns to use (the data.* keys)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation settings shared by every recipe (the train.* keys)."""
