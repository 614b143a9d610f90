"""What a recipe is handed: the resolved config, the accelerator, the run folder and small helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accelerate import Accelerator
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from hfx import api, registry
from hfx.config.run import RunConfig
from hfx.runner.run_dir import RunDir

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """Shared state of one ``hfx run``.

    Attributes:
        cfg: The resolved config as OmegaConf (what config.yaml holds).
        run: The run-level sections as dataclasses (``run.train.max_steps``, ``run.data.path``, ...).
        plugin_cfgs: Each plugin's config dataclass, by plugin name.
        plugins: The plugins of this run, in order; the last one's recipe drives the run.
        accelerator: accelerate's Accelerator (devices, processes, mixed precision, accumulation).
        run_dir: The run folder.
    """

    cfg: DictConfig
    run: RunConfig
    plugin_cfgs: dict[str, Any]
    plugins: list[registry.Plugin]
    accelerator: Accelerator
    run_dir: RunDir
    logged: list[dict[str, Any]] = field(default_factory=list)
    sharded: list[nn.Module] = field(default_factory=list)
    """Models the training loop sharded with train.fsdp (hfx.runner.fsdp); gathered whole before saving."""

    @property
    def is_main(self) -> bool:
        """Whether this is accelerate's main process (the one that prints, logs and saves)."""
        return self.accelerator.is_main_process

    def config(self, plugin: str) -> Any:
        """The config dataclass of ``plugin``."""
        return self.plugin_cfgs[plugin]

    def load_model(self, task: str | None = None, **kwargs: Any) -> tuple[nn.Module, Any]:
        """Load ``run.model`` for ``task`` (default ``run.task``); returns ``(model, tokenizer)``.

        ``run.data.max_length`` is lowered, with a warning, to the longest input the model can embed
        (:func:`hfx.models.limits.max_input_length`), so tokenization truncates there and no batch reaches
        past its position table.
        """
        from hfx.models.limits import max_input_length
        from hfx.models.loading import load_model

        model, tokenizer = load_model(self.run.model, task or self.run.task,
                                      trust_remote_code=self.run.trust_remote_code, **kwargs)
        self.run.data.max_length = max_input_length(model, tokenizer, self.run.data.max_length, what="data.max_length")
        return model, tokenizer

    def load_data(self, required: Sequence[str] = ()) -> Any:
        """Load ``run.data`` as a DatasetDict with "train" and "eval", checking ``required`` columns."""
        from hfx.data.loading import load_data

        return load_data(self.run.data, seed=self.run.seed, required=required)

    def apply_plugins(self, model: nn.Module) -> nn.Module:
        """Apply every plugin of the run that has an ``apply``, in order, with its config."""
        for p in self.plugins:
            if p.apply is not None:
                model = api.apply(model, p.name, cfg=self.plugin_cfgs[p.name])
        return model

    def log(self, record: dict[str, Any]) -> None:
        """Record metrics (to metrics.jsonl on the main process)."""
        self.logged.append(record)
        self.run_dir.log(record)

    def print(self, *args: Any) -> None:
        """Print a line on the main process, above any progress bar (``tqdm.write``)."""
        if self.is_main:
            tqdm.write(" ".join(str(a) for a in args))

    def progress(self, total: int, desc: str, initial: int = 0) -> tqdm:
        """A progress bar shown on the main process only."""
        return tqdm(total=total, initial=initial, desc=desc, disable=not self.is_main, dynamic_ncols=True, leave=False)
