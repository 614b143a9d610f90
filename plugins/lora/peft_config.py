"""``adapter_config.json``: hfx's LoraConfig to peft's JSON and back.

peft before 0.14 builds its config with ``LoraConfig(**json)`` and so raises ``TypeError: unexpected keyword
argument`` on any key it does not know; newer peft versions write ~40 keys. hfx
writes only the keys of :data:`OLD_PEFT_KEYS`, and only what is needed to rebuild the same layers.

Reading goes the other way: a key whose value hfx cannot honour (a LoRA variant it does not implement, an
initialisation that changed the base weights) is an error rather than silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from hfx.errors import HfxError
from hfx_plugins.lora.config import LoraConfig

__all__ = ["OLD_PEFT_KEYS", "config_from_peft", "task_type_of", "to_peft_config"]

OLD_PEFT_KEYS = frozenset({
    # PeftConfigMixin + PeftConfig in peft 0.10.0 (March 2024), read from its source
    "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "task_type", "inference_mode",
    # LoraConfig in peft 0.10.0
    "r", "target_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora", "modules_to_save",
    "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern",
    "megatron_config", "megatron_core", "loftq_config", "use_dora", "layer_replication",
})
"""Config keys that peft 0.10.0 accepts; hfx writes a subset of them."""

# peft keys whose non-default value changes the computation in a way hfx does not implement
_UNSUPPORTED = ("lora_bias", "use_qalora", "layer_replication", "target_parameters", "trainable_token_indices",
                "alora_invocation_tokens", "arrow_config", "use_bdlora", "velora_config", "monteclora_config",
                "kasa_config", "megatron_config")
_READ = ("r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "fan_in_fan_out", "bias",
         "use_rslora", "use_dora", "modules_to_save", "layers_to_transform", "layers_pattern", "rank_pattern",
         "alpha_pattern")


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def task_type_of(model: nn.Module) -> str | None:
    """peft's task type for a transformers model class (it picks the PeftModel subclass on loading)."""
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):  # GPT2LMHeadModel is a causal LM too
        return "CAUSAL_LM"
    if name == "EncoderDecoderModel" or (name.endswith(("ForConditionalGeneration", "ForSeq2SeqLM"))
                                         and getattr(getattr(model, "config", None), "is_encoder_decoder", False)):
        return "SEQ_2_SEQ_LM"
    for suffix, task in (("ForSequenceClassification", "SEQ_CLS"), ("ForTokenClassification", "TOKEN_CLS"),
                         ("ForQuestionAnswering", "QUESTION_ANS")):
        if name.endswith(suffix):
            return task
    if name.endswith("Model") and getattr(model, "base_model", None) is model:
        return "FEATURE_EXTRACTION"  # a bare backbone (AutoModel)
    return None


def to_peft_config(cfg: LoraConfig, targets: list[str], task_type: str | None, base: str | None) -> dict[str, Any]:
    """The adapter_config.json of ``cfg`` whose adapter sits on the layers ``targets``."""
    out: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base,
        "inference_mode": True,  # what peft itself writes on save
        "r": cfg.r,
        "lora_alpha": _number(cfg.lora_alpha),
        "lora_dropout": cfg.lora_dropout,
        "target_modules": targets,
        "fan_in_fan_out": cfg.fan_in_fan_out,
        "bias": cfg.bias,
        "use_rslora": cfg.use_rslora,
        "use_dora": cfg.use_dora,
        "modules_to_save": cfg.modules_to_save,
        "init_lora_weights": cfg.init_lora_weights,
        "rank_pattern": dict(cfg.rank_pattern),
        "alpha_pattern": {k: _number(v) for k, v in cfg.alpha_pattern.items()},
    }
    assert set(out) <= OLD_PEFT_KEYS, set(out) - OLD_PEFT_KEYS
    return out


def config_from_peft(raw: dict[str, Any], adapter_name: str, model: nn.Module, folder: Path) -> LoraConfig:
    """Rebuild hfx's LoraConfig from an adapter_config.json written by peft or hfx.

    Raises:
        HfxError: the adapter is not a LoRA adapter, or uses a peft feature hfx does not implement.
    """
    if raw.get("peft_type", "LORA") != "LORA":
        raise HfxError(f"{folder} holds a {raw['peft_type']} adapter; the lora plugin loads LORA adapters only")
    for key in _UNSUPPORTED:
        if raw.get(key) not in (None, False, [], {}):
            raise HfxError(f"{folder}: the adapter uses peft's {key}={raw[key]!r}, which hfx does not implement; "
                           "load it with peft instead")
    init = raw.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() != "gaussian":
        raise HfxError(f"{folder}: the adapter was initialised with {init!r}, which changes the base weights; convert "
                       "it to plain LoRA with peft (save_pretrained(path_initial_model_for_weight_conversion=...))")
    fields = {k: raw[k] for k in _READ if raw.get(k) is not None}
    if isinstance(fields.get("target_modules"), list):
        fields["target_modules"] = sorted(fields["target_modules"])
    # peft adds the usual head names (classifier, score) to modules_to_save; keep those the model has
    names = {k.rsplit(".", 1)[-1] for k, _ in model.named_modules()} | {k for k, _ in model.named_modules()}
    saved = [m for m in fields.get("modules_to_save") or [] if m in names or any(n.endswith(f".{m}") for n in names)]
    fields["modules_to_save"] = saved or None
    try:
        return LoraConfig(**fields, task_type=raw.get("task_type") or "", adapter_name=adapter_name,
                          init_lora_weights=init)
    except HfxError as err:
        raise HfxError(f"{folder}/adapter_config.json: {err}") from None

