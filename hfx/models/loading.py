"""Load a model and its tokenizer by family and task, with the pad token fixed.

``load_model("smollm2-135m")`` picks the Auto class from the task ("auto": classification for encoders,
causal LM for decoders, seq2seq LM for encoder-decoders), loads the tokenizer from the same folder, and
makes sure ``model.config.pad_token_id`` is set: a sequence-classification head on a decoder reads the
last non-pad token, and with ``pad_token_id`` unset it silently reads the wrong one (the reward-model
pitfall).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from hfx.errors import HfxError, did_you_mean
from hfx.models.zoo import _quiet_transformers, resolve_model

__all__ = ["TASKS", "Family", "load_config", "load_model", "model_family", "resolve_task"]

Family = Literal["encoder", "decoder", "encoder-decoder"]

TASKS: tuple[str, ...] = ("auto", "base", "sequence-classification", "causal-lm", "seq2seq-lm", "masked-lm")

_DEFAULT_TASK: dict[str, str] = {
    "encoder": "sequence-classification",
    "decoder": "causal-lm",
    "encoder-decoder": "seq2seq-lm",
}

# task -> families it cannot run on (a task absent here fits every family)
_MISFITS: dict[str, tuple[str, ...]] = {
    "causal-lm": ("encoder-decoder",),
    "seq2seq-lm": ("encoder", "decoder"),
    "masked-lm": ("decoder", "encoder-decoder"),
}

# "seq2seq-lm" goes through AutoModelForSeq2SeqLM, which in transformers 5.x maps model_type
# "encoder-decoder" to EncoderDecoderModel as well (checked with 5.24).
_AUTO_CLASSES: dict[str, Any] = {
    "base": AutoModel,
    "sequence-classification": AutoModelForSequenceClassification,
    "causal-lm": AutoModelForCausalLM,
    "seq2seq-lm": AutoModelForSeq2SeqLM,
    "masked-lm": AutoModelForMaskedLM,
}


def model_family(config: PretrainedConfig) -> Family:
    """Return the architecture family of ``config``: encoder, decoder or encoder-decoder."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    # masked-LM first: BERT is also registered as a causal LM (BertLMHeadModel) but is an encoder
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def resolve_task(task: str, family: Family) -> str:
    """Turn ``task`` ("auto" included) into a concrete task that fits ``family``.

    Raises:
        HfxError: an unknown task (with the nearest name), or one the family cannot do (e.g. seq2seq-lm on a
            decoder-only model), listing those it can.
    """
    if task not in TASKS:
        raise HfxError(f"unknown task '{task}'{did_you_mean(task, TASKS)}; choose one of: {', '.join(TASKS)}")
    if task == "auto":
        return _DEFAULT_TASK[family]
    if family in _MISFITS.get(task, ()):
        fits = [t for t in TASKS[1:] if family not in _MISFITS.get(t, ())]
        raise HfxError(f"task '{task}' does not fit a {family} model; choose one of: auto, {', '.join(fits)}")
    return task


def _one_line(err: Exception) -> str:
    """First non-empty line of an exception message (transformers' messages run over many lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(err).__name__


def load_config(name_or_path: str, *, trust_remote_code: bool = False) -> PretrainedConfig:
    """Load the config of a model (offline name, local folder or Hub id) with ``AutoConfig``.

    Raises:
        HfxError: the name does not resolve (see :func:`hfx.models.zoo.resolve_model`), the folder has no
            config.json, or transformers cannot read it.
    """
    path = resolve_model(name_or_path)
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise HfxError(f"model folder '{name_or_path}' has no config.json; give a folder saved with save_pretrained")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise HfxError(
            f"cannot read the config of model '{name_or_path}': {_one_line(err)}; "
            "give a folder with config.json, a Hub id, or an offline model name"
        ) from None


def _fix_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token (EOS for decoders) and copy its id into the model config when unset."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    pad = tokenizer.pad_token_id
    if pad is None:
        return
    configs = [model.config, getattr(model, "generation_config", None)]
    if getattr(model.config, "decoder", None) is not None:  # EncoderDecoderModel nests its decoder config
        configs.append(model.config.decoder)
    for cfg in configs:
        if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = pad


def load_model(
    name_or_path: str,
    task: str = "auto",
    *,
    num_labels: int | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` for ``task`` from an offline name, a local folder or a Hub id.

    ``num_labels`` sizes a sequence-classification head; extra ``kwargs`` go to ``from_pretrained``.
    Remote code runs only with ``trust_remote_code=True``.

    Args:
        name_or_path: Offline name (``minilm``, ``smollm2-135m``, ``minilm2minilm``), local folder or Hub id.
        task: One of :data:`TASKS`; ``auto`` picks the family's main task.
        num_labels: Classes of a sequence-classification head.
        dtype: Parameter dtype.
        trust_remote_code: Allow the repository's own Python code.
        **kwargs: Passed to ``from_pretrained``.

    Returns:
        ``(model, tokenizer)``; a tokenizer without a pad token gets its eos token as pad.

    Raises:
        HfxError: every loading failure: unknown name or missing folder, a task that does not fit the model,
            unreadable config or weights.
    """
    config = load_config(name_or_path, trust_remote_code=trust_remote_code)
    path = resolve_model(name_or_path)  # already built by load_config: cheap
    task = resolve_task(task, model_family(config))
    if num_labels is not None:
        if task != "sequence-classification":
            raise HfxError(f"num_labels={num_labels} needs task 'sequence-classification', not '{task}'")
        kwargs["num_labels"] = num_labels
    if Path(path).is_dir() and any(Path(path).glob("*.safetensors")):
        kwargs.setdefault("use_safetensors", True)  # never unpickle a .bin when safetensors are there
    # A bare backbone loaded from a task checkpoint leaves the head's weights unused by design: transformers'
    # multi-line load report about them is noise there (and would break one-line error output).
    quiet = _quiet_transformers() if task == "base" else contextlib.nullcontext()
    try:
        with quiet:
            model = _AUTO_CLASSES[task].from_pretrained(
                path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
            )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise HfxError(f"cannot load model '{name_or_path}' for task '{task}': {_one_line(err)}") from None
    _fix_pad_token(model, tokenizer)
    return model, tokenizer
