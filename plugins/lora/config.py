"""Config of the ``lora`` plugin.

:class:`LoraConfig` is what ``hfx.apply(model, "lora", ...)`` takes: first peft's ``LoraConfig`` fields with
their names and meanings, so a peft user's config carries over unchanged, then hfx's own (adapter naming,
LoRA+). :class:`LoraRunConfig` adds what only ``hfx run`` uses (the ``lora:`` section: merge on save, the
generation comparison).
OmegaConf cannot type unions such as ``str | list[str]``: those fields are ``Any`` and checked here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hfx.errors import HfxError

__all__ = ["BIAS_MODES", "TASK_TYPES", "LoraConfig", "LoraRunConfig"]

BIAS_MODES = ("none", "all", "lora_only")
TASK_TYPES = ("", "CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
_PEFT_ONLY_INITS = ("pissa", "olora", "loftq", "eva", "corda", "orthogonal", "mica", "lora_ga")


def _names(value: Any, key: str, allow_regex: bool) -> Any:
    """Check a list of module names (or, when allowed, one regex string); return it as a plain list or str."""
    if value is None or (allow_regex and isinstance(value, str)):
        return value
    if isinstance(value, (set, tuple)):
        value = sorted(value) if isinstance(value, set) else list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        kind = "a list of module names or one regular expression" if allow_regex else "a list of module names"
        raise HfxError(f"lora.{key} must be {kind}, e.g. [q_proj,v_proj]; got {value!r}")
    if not value:
        raise HfxError(f"lora.{key} is an empty list; name at least one module, or leave it unset")
    return list(value)


@dataclass
class LoraConfig:
    """Low-rank adapters (LoRA, rsLoRA, DoRA) with peft's field names (https://arxiv.org/abs/2106.09685).

    Raises:
        HfxError: (on construction) a non-positive ``r`` or ``lora_alpha``, ``lora_dropout`` outside [0, 1), an
            unknown ``bias`` or ``task_type``, malformed module lists, layer indices or patterns, an
            ``init_lora_weights`` hfx does not implement, an invalid ``adapter_name``, or ``loraplus_lr_ratio``
            in (0, 1).
    """

    r: int = 8
    """Rank of the update B @ A (A: r x in, B: out x r)."""
    lora_alpha: float = 8.0
    """Scale numerator: the update is multiplied by lora_alpha / r (rsLoRA: lora_alpha / sqrt(r))."""
    lora_dropout: float = 0.0
    """Dropout probability on the input of the LoRA branch (training only; not applied to embeddings)."""
    target_modules: Any = None
    """Layers to adapt: a list of names ([q_proj,v_proj]; a name matches itself or any path ending in .name), one
    regex matched against the full path, or all-linear (every Linear/Conv1D but the output layer). Unset: the
    architecture's usual attention projections."""
    exclude_modules: Any = None
    """Layers never to adapt: a list of names or one regex, matched like target_modules."""
    fan_in_fan_out: bool = False
    """The layer stores its weight as (in, out), as GPT-2's Conv1D does; set automatically for Conv1D."""
    bias: str = "none"
    """Which biases train and are saved: none, all (every bias of the model) or lora_only (biases of adapted
    layers)."""
    use_rslora: bool = False
    """rsLoRA: scale by lora_alpha / sqrt(r) instead of lora_alpha / r (stable at high ranks).
    https://arxiv.org/abs/2312.03732"""
    use_dora: bool = False
    """DoRA: learn a magnitude per output row on top of the LoRA direction (Linear and Conv1D layers).
    https://arxiv.org/abs/2402.09353"""
    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter (e.g. [classifier] for a new head); a sequence-
    classification model's head is added automatically."""
    layers_to_transform: Any = None
    """Only adapt these layer indices (an int or a list of ints); the index is the number after layers_pattern."""
    layers_pattern: Any = None
    """Name of the module list holding the layers (e.g. layers, h, block) for layers_to_transform; unset: the
    first numbered path segment."""
    rank_pattern: dict[str, int] = field(default_factory=dict)
    """Per-layer rank overrides: {name or regex matched at the end of the layer path: r}."""
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    """Per-layer lora_alpha overrides, matched like rank_pattern."""
    init_lora_weights: Any = True
    """true: A Kaiming-uniform and B zero (the update starts at zero); gaussian: A ~ N(0, 1/r); false: both
    random (tests only)."""
    task_type: str = ""
    """peft task type written to adapter_config.json (CAUSAL_LM, SEQ_CLS, SEQ_2_SEQ_LM, ...); empty: inferred
    from the model class when saving."""

    adapter_name: str = "default"
    """Name of the adapter this config adds (several named adapters can live on one model)."""
    loraplus_lr_ratio: float = 0.0
    """LoRA+: learning rate of the B matrices = ratio x that of A (the paper suggests 16); 0 turns LoRA+ off.
    https://arxiv.org/abs/2402.12354"""
    loraplus_lr_embedding: float = 1e-6
    """LoRA+: learning rate of the embedding adapters' A and B (peft's default)."""

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise HfxError(f"lora.r must be a positive integer (the rank of B @ A), got {self.r!r}")
        if not self.lora_alpha > 0:
            raise HfxError(f"lora.lora_alpha must be positive (the update is scaled by lora_alpha / r), got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise HfxError(f"lora.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.bias not in BIAS_MODES:
            raise HfxError(f"lora.bias must be one of {', '.join(BIAS_MODES)}, got {self.bias!r}")
        self.target_modules = _names(self.target_modules, "target_modules", allow_regex=True)
        self.exclude_modules = _names(self.exclude_modules, "exclude_modules", allow_regex=True)
        self.modules_to_save = _names(self.modules_to_save, "modules_to_save", allow_regex=False)
        self._check_layers()
        self._check_patterns()
        self._check_init()
        if self.task_type not in TASK_TYPES:
            choices = ", ".join(t or "''" for t in TASK_TYPES)
            raise HfxError(f"lora.task_type must be one of {choices}, got {self.task_type!r}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.adapter_name) or self.adapter_name.startswith("lora_"):
            raise HfxError(f"lora.adapter_name {self.adapter_name!r} is invalid: use letters, digits, '_' and '-', "
                           "not starting with 'lora_' (it becomes part of parameter names and a folder name)")
        if self.loraplus_lr_ratio < 0 or 0 < self.loraplus_lr_ratio < 1:
            raise HfxError(f"lora.loraplus_lr_ratio must be 0 (off) or >= 1 (B learns faster than A), got {self.loraplus_lr_ratio}")

    def _check_layers(self) -> None:
        idx = self.layers_to_transform
        if isinstance(idx, int) and not isinstance(idx, bool):
            idx = [idx]
        if idx is not None and (not isinstance(idx, list) or not all(isinstance(i, int) and i >= 0 for i in idx)):
            raise HfxError(f"lora.layers_to_transform must be a layer index or a list of them, got {self.layers_to_transform!r}")
        self.layers_to_transform = idx
        pat = self.layers_pattern
        if pat is not None and not isinstance(pat, str):
            pat = _names(pat, "layers_pattern", allow_regex=False)
        if pat is not None and idx is None:
            raise HfxError("lora.layers_pattern only works with lora.layers_to_transform; set both or neither")
        self.layers_pattern = pat

    def _check_patterns(self) -> None:
        self.rank_pattern, self.alpha_pattern = dict(self.rank_pattern), dict(self.alpha_pattern)
        for key, r in self.rank_pattern.items():
            if not isinstance(r, int) or isinstance(r, bool) or r < 1:
                raise HfxError(f"lora.rank_pattern[{key!r}] must be a positive integer rank, got {r!r}")
        for key, a in self.alpha_pattern.items():
            if not isinstance(a, (int, float)) or a <= 0:
                raise HfxError(f"lora.alpha_pattern[{key!r}] must be a positive number, got {a!r}")

    def _check_init(self) -> None:
        init = self.init_lora_weights
        if isinstance(init, str) and init.lower() in ("true", "false"):
            init = init.lower() == "true"
        if isinstance(init, str) and init.lower().startswith(_PEFT_ONLY_INITS):
            raise HfxError(f"lora.init_lora_weights={init!r} (a data- or SVD-based init) is not implemented in hfx; "
                           "use true, gaussian or false, or train that adapter with peft")
        if init not in (True, False, "gaussian"):
            raise HfxError(f"lora.init_lora_weights must be true, false or gaussian, got {init!r}")
        self.init_lora_weights = init

    def scaling(self, r: int, alpha: float) -> float:
        """The factor on B @ A: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return alpha / (r**0.5) if self.use_rslora else alpha / r


@dataclass
class LoraRunConfig(LoraConfig):
    """The ``lora:`` section of ``hfx run``: :class:`LoraConfig` plus what only the recipe uses.

    Raises:
        HfxError: (on construction) what :class:`LoraConfig` raises, ``eval_generations`` < 0 or
            ``max_new_tokens`` < 1.
    """

    merge: bool = False
    """Also save the model with the adapter merged into its weights (a plain transformers model)."""
    eval_generations: int = 48
    """Instruction tuning and seq2seq: held-out prompts answered greedily before and after training for the
    exact-match score; the first 6 are shown side by side."""
    max_new_tokens: int = 24
    """Tokens generated per prompt for that comparison and the exact-match score."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_generations < 0 or self.max_new_tokens < 1:
            raise HfxError("lora.eval_generations must be >= 0 and lora.max_new_tokens >= 1")
