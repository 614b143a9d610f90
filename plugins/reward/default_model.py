"""The reward plugin's default reward model, trained on demand: what another plugin (ppo) uses when given none.

:func:`train_default_model` trains exactly what ``hfx run plugin=reward`` trains with its preset (smollm2-135m
on the bundled rankings, ``configs/default.yaml``) and puts the saved model at a folder of the caller's
choosing; :func:`default_recipe_fingerprint` names that recipe, so a cache of such models can tell a model
trained by an older preset or ranking set from the current one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hfx.errors import HfxError

__all__ = ["default_recipe_fingerprint", "train_default_model"]


def default_recipe_fingerprint() -> str:
    """First 10 hex digits of SHA-256 over the default preset's values and the bundled rankings files.

    The preset is read as values (its comments do not count); each rankings file adds its name, a NUL byte and
    its bytes, in name order.
    """
    import yaml

    from hfx.data.bundled import BUNDLED_DIR

    preset = yaml.safe_load((Path(__file__).parent / "configs" / "default.yaml").read_text(encoding="utf-8"))
    digest = hashlib.sha256(json.dumps(preset, sort_keys=True).encode())  # values, not comments
    for f in sorted((BUNDLED_DIR / "rankings").glob("*.jsonl")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:10]


def train_default_model(target: Path, seed: int, overrides: Sequence[str] = ()) -> Any:
    """Train the default reward model with ``hfx run plugin=reward seed=<seed>`` and save it at ``target``.

    The run folder is kept beside ``target`` (``.<name>.runs/``: its log, metrics and summary). The run skips
    the evaluation before training (the trained model is the same with or without it: tested in
    tests/plugins/reward) and leaves the python, numpy and torch random states as it found them, so a caller
    that seeds before it draws the same numbers after it as when the model came from a cache. ``target``
    appears whole or not at all.

    Args:
        target: Folder to create (an ``hfx.save`` folder with the tokenizer; ``load_reward_model`` reads it).
        seed: The run's ``seed``.
        overrides: More ``hfx run`` overrides (a test's tiny model and data); a cache keyed by
            :func:`default_recipe_fingerprint` passes none.

    Returns:
        The :class:`hfx.runner.run.RunResult` of the reward run (its folder, metrics before/after).

    Raises:
        HfxError: the run left no saved model.
    """
    from hfx.runner.checkpoint import preserved_rng
    from hfx.runner.run import run

    target = Path(target)
    work = target.parent / f".{target.name}.runs"
    with preserved_rng():
        result = run(["plugin=reward", f"output_dir={work}", f"seed={seed}", "train.eval_before=false", *overrides])
    found = result.run_dir / "artifacts" / "model"
    if not found.is_dir():
        raise HfxError(f"hfx run plugin=reward left no saved model at {found}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(found, tmp)
    os.replace(tmp, target)  # the folder appears whole or not at all
    return result
