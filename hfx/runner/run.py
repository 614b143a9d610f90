"""``hfx run``: compose the config, drive the last plugin's recipe, and leave a complete run folder."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin, broadcast_object_list, set_seed, str_to_bool

from hfx import registry
from hfx.config.compose import Composed, compose_run
from hfx.errors import HfxError
from hfx.metrics import interval_columns
from hfx.precision import PrecisionChoice, resolve_mixed_precision
from hfx.quiet import quiet_libraries
from hfx.runner import fsdp
from hfx.runner.context import RunContext
from hfx.runner.report import plot_curves, print_results
from hfx.runner.run_dir import RunDir

__all__ = ["RunResult", "run"]


@dataclass
class RunResult:
    """What one ``hfx run`` produced: its folder, the metrics before and after training, and summary.json."""

    run_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    summary: dict[str, Any]


def _accelerator(mixed_precision: str, accumulation: int, fsdp: bool = False,
                 fsdp_cpu_offload: bool = False) -> tuple[Accelerator, PrecisionChoice]:
    """accelerate's Accelerator with ``train.mixed_precision`` resolved (``auto`` measures the device).

    ``cpu=True`` on a machine without CUDA: accelerate otherwise turns ``torchrun --nproc_per_node N`` into N
    unrelated single processes there. ``fsdp`` on CUDA under a multi-process launch: accelerate's FSDP2 plugin
    (:func:`hfx.runner.fsdp.accelerate_plugin`, untested here); on CPU hfx shards in the training loop.
    """
    import torch

    use_cpu = str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "0")) or not torch.cuda.is_available()
    choice = resolve_mixed_precision(mixed_precision, "cpu" if use_cpu else "cuda")
    if choice.warning:
        print(f"hfx: warning: {choice.warning}", file=sys.stderr)
    plugin = GradientAccumulationPlugin(num_steps=accumulation, sync_with_dataloader=False)
    extra = {}
    if fsdp and not use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from hfx.runner.fsdp import accelerate_plugin

        extra["fsdp_plugin"] = accelerate_plugin(fsdp_cpu_offload)
    return Accelerator(cpu=use_cpu, mixed_precision=choice.mode, gradient_accumulation_plugin=plugin, **extra), choice


def _warn_single_cpu_launch(acc: Accelerator) -> None:
    """Say so when ``accelerate launch --cpu --num_processes N`` (N > 1) started a single process.

    accelerate's multi-CPU mode runs through mpirun: without ``--mpirun_hostfile`` its ``--cpu`` launcher
    starts *one* process (it only sets MASTER_ADDR/MASTER_PORT, which it does only for N > 1).
    :func:`hfx.runner.launch.cpu_relaunch` starts the N processes when it can read N from the launcher's
    command line; this warning covers the rest (e.g. N from an accelerate config file).
    """
    env = os.environ
    if (acc.num_processes == 1 and str_to_bool(env.get("ACCELERATE_USE_CPU", "0"))
            and "MASTER_ADDR" in env and "WORLD_SIZE" not in env and acc.is_main_process):
        print("hfx: warning: accelerate launch --cpu started a single process (its multi-CPU mode needs mpirun); "
              "for N processes on CPU run ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N "
              "-m hfx run ...", file=sys.stderr)


def run(args: list[str], config_file: str | None = None, composed: Composed | None = None) -> RunResult:
    """Run ``hfx run`` with command-line ``args`` (overrides) and an optional YAML ``config_file``.

    Composes the config (unless ``composed`` is given), lets the last plugin's recipe set up, evaluate, train,
    evaluate and save, and writes the run folder (``runs/<time>-<plugins>/``; summary.json last, marking the
    run complete).

    Args:
        args: Overrides in Hydra's grammar (``plugin=lora``, ``train.max_steps=50``).
        config_file: A YAML file applied after the presets and before ``args``.
        composed: The config of ``args`` and ``config_file`` already composed and validated
            (:func:`hfx.config.compose.compose_run`; the ``hfx`` command does it before importing torch).

    Returns:
        The run folder and its metrics.

    Raises:
        HfxError: any input mistake (config, model, data), a driving plugin without a recipe, or a run
            folder that cannot be created or resumed; nothing is left behind when setup fails.
    """
    quiet_libraries()  # no-op under `hfx -v` or HFX_DEBUG=1
    composed = composed or compose_run(args, config_file)
    cfg, plugins, run_cfg, plugin_cfgs = composed.cfg, composed.plugins, composed.run, composed.plugin_cfgs
    driver = plugins[-1]
    if driver.recipe is None:
        raise HfxError(f"plugin {driver.name!r} has no recipe for hfx run; put a plugin with one last in plugin=[...]")
    t = run_cfg.train
    acc, precision = _accelerator(t.mixed_precision, t.gradient_accumulation_steps, t.fsdp, t.fsdp_cpu_offload)
    _warn_single_cpu_launch(acc)
    fsdp.check_launch(t, acc.num_processes, acc.is_main_process)
    # Every process must agree on the folder name, which contains the time.
    stamp = broadcast_object_list([RunDir.stamp()])[0] if acc.num_processes > 1 else RunDir.stamp()
    run_dir = RunDir.plan(run_cfg.output_dir, run_cfg.run_dir, run_cfg.resume, cfg.plugin, stamp)
    run_dir.is_main = acc.is_main_process
    set_seed(run_cfg.seed)
    ctx = RunContext(cfg, run_cfg, plugin_cfgs, plugins, acc, run_dir)
    recipe_cls = registry.resolve(driver.recipe)  # the recipe class itself, imported on first use
    fsdp.check_recipe(ctx, driver.name, recipe_cls)  # train.fsdp with a recipe that trains outside the shared loop
    recipe = recipe_cls(ctx)
    recipe.setup()  # loads model and data: input errors surface here, before any folder exists
    run_dir.create(cfg)
    started = time.time()
    try:
        before = run_dir.read_json("before.json") if run_dir.resumed else None
        if before is None:
            before = recipe.evaluate() if run_cfg.train.eval_before else {}
            run_dir.write_json("before.json", interval_columns(before))  # n and 95% interval of each Estimate
            if before:
                ctx.log({"step": 0, **{f"eval_{k}": v for k, v in before.items()}})
        # A recipe that builds a comparison instead of training (quant's error tables, icl's prompt settings)
        # defines `compare()`; the runner calls it where a training recipe's `train()` goes.
        train_metrics = recipe.compare() if callable(getattr(recipe, "compare", None)) else recipe.train()
        fsdp.check_recipe(ctx, driver.name)  # train.fsdp, yet no model was sharded
        after = recipe.evaluate()
        last_step = getattr(recipe, "total_steps", run_cfg.train.max_steps)  # any class with the four steps works
        ctx.log({"step": last_step, **{f"eval_{k}": v for k, v in after.items()}})
        for model in ctx.sharded:  # every rank hands its slices over; rank 0 then holds each model whole
            fsdp.unshard_for_save(model)
        artifacts = recipe.save(run_dir.artifacts) if acc.is_main_process else []
        acc.wait_for_everyone()
    except BaseException:
        run_dir.discard_if_empty()
        raise
    summary = {
        "plugins": list(cfg.plugin),
        "model": run_cfg.model,
        "before": interval_columns(before),
        "after": interval_columns(after),
        "train": train_metrics,
        "artifacts": [str(Path(a).relative_to(run_dir.path)) if Path(a).is_relative_to(run_dir.path) else str(a)
                      for a in artifacts],
        "seconds": round(time.time() - started, 1),
        "processes": acc.num_processes,
        "mixed_precision": {"requested": precision.requested, "used": precision.mode, "reason": precision.reason},
    }
    if acc.is_main_process:
        plot_curves(run_dir.metrics(), run_dir.path / "curves.png", f"hfx run {'+'.join(cfg.plugin)} on {run_cfg.model}")
        run_dir.write_json("summary.json", summary)  # last: its presence marks the run complete
        print_results(f"{'+'.join(cfg.plugin)} on {run_cfg.model}", summary["before"], summary["after"],
                      {**train_metrics, "run folder": str(run_dir.path)})
    return RunResult(run_dir.path, before, after, summary)
