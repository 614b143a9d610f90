"""Model zoo (offline model names) and loading by family and task."""

from hfx.models.loading import TASKS, Family, load_config, load_model, model_family, resolve_task
from hfx.models.zoo import OFFLINE_MODELS, cache_dir, resolve_model

__all__ = [
    "OFFLINE_MODELS",
    "TASKS",
    "Family",
    "cache_dir",
    "load_config",
    "load_model",
    "model_family",
    "resolve_model",
    "resolve_task",
]
