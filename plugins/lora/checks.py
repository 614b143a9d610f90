"""``hfx validate plugin=lora``: hfx's LoRA against peft's on tiny random models (seconds, no download).

Each check adapts one tiny model with hfx and a copy of it with peft, from the same RNG state, and returns
the largest difference: of the initial A and B, of the outputs once both share the same random adapter
weights, of outputs across the two libraries' save/load, of losses over 20 AdamW steps (relative), of the
trainable parameter counts, and of merged models.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from typing import Any

import torch
from torch import nn

from hfx import parity
from hfx.validate import Check

__all__ = ["checks"]

TOL = 1e-5  # fp32 outputs: the same sums in a different order differ by rounding only
_TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "bert": ["query", "value"], "t5": ["q", "v"]}
_TASKS = {"llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "bert": "SEQ_CLS", "t5": "SEQ_2_SEQ_LM"}
_TEXTS = ["the function returns a new list of values", "a class may define its own methods"]


def _pair(family: str, **fields: Any) -> tuple[nn.Module, nn.Module, Any]:
    from peft import LoraConfig, get_peft_model

    import hfx
    from hfx.testing import tiny_model

    base, tok = tiny_model(family)
    twin = copy.deepcopy(base)
    fields.setdefault("target_modules", _TARGETS[family])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ours = hfx.apply(base, "lora", **fields)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's note that Conv1D needs fan_in_fan_out
            theirs = get_peft_model(twin, LoraConfig(task_type=_TASKS[family], **fields))
    return ours, theirs, tok


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("base_model.model."): v for k, v in model.state_dict().items() if "lora_" in k}


@torch.no_grad()
def _randomize(*models: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    maps = [_tensors(m) for m in models]
    for key in sorted(maps[0]):
        noise = torch.randn(maps[0][key].shape, generator=g) * 0.1
        for m in maps:
            m[key].add_(noise)


def _batch(tok: Any, family: str) -> dict[str, torch.Tensor]:
    enc = dict(tok(_TEXTS, padding=True, return_tensors="pt"))
    enc.pop("token_type_ids", None)
    if family == "t5":
        enc["decoder_input_ids"] = enc["input_ids"][:, :4]
    return enc


def _out(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def _init(family: str) -> float:
    ours, theirs, _ = _pair(family, r=4)
    a, b = _tensors(ours), _tensors(theirs)
    return max((a[k] - b[k]).abs().max().item() for k in a) if a.keys() == b.keys() else float("inf")


def _outputs(family: str, **fields: Any) -> float:
    ours, theirs, tok = _pair(family, r=4, lora_alpha=8, **fields)
    _randomize(ours, theirs)
    x = _batch(tok, family)
    return (_out(ours, x) - _out(theirs, x)).abs().max().item()


def _counts(family: str) -> float:
    from hfx_plugins.lora.trainable import parameter_counts

    ours, theirs, _ = _pair(family, r=4, use_dora=True)
    return float(abs(parameter_counts(ours)[0] - theirs.get_nb_trainable_parameters()[0]))


def _hfx_to_peft(family: str) -> float:
    from peft import PeftModel

    import hfx
    from hfx.testing import tiny_model

    ours, _, tok = _pair(family, r=4, use_dora=True)
    _randomize(ours)
    x = _batch(tok, family)
    with tempfile.TemporaryDirectory() as tmp:
        hfx.save(ours, tmp)
        theirs = PeftModel.from_pretrained(tiny_model(family)[0], tmp)
        return (_out(ours, x) - _out(theirs, x)).abs().max().item()


def _peft_to_hfx(family: str) -> float:
    from hfx.testing import tiny_model

    _, theirs, tok = _pair(family, r=4)
    _randomize(theirs)
    return parity.peft_to_hfx_gap(theirs, tiny_model(family)[0], _batch(tok, family))


def _training(**fields: Any) -> float:
    """Largest relative difference of the losses over 20 AdamW steps on one fixed batch."""
    ours, theirs, tok = _pair("llama", r=4, lora_alpha=8, **fields)
    x = _batch(tok, "llama")
    x["labels"] = x["input_ids"].masked_fill(x["attention_mask"] == 0, -100)
    return parity.training_gap((ours, theirs), x, steps=20)


def _merged(family: str) -> float:
    from hfx_plugins.lora.model import merge_and_unload

    ours, theirs, tok = _pair(family, r=4, use_dora=True)
    _randomize(ours, theirs)
    x = _batch(tok, family)
    return (_out(merge_and_unload(ours), x) - _out(theirs.merge_and_unload(), x)).abs().max().item()


def checks() -> list[Check]:
    out = [Check("initial A and B, same seed (llama)", "peft", 0.0, lambda: _init("llama"))]
    for fam in ("bert", "llama", "gpt2", "t5"):
        out.append(Check(f"outputs, {fam} ({', '.join(_TARGETS[fam])})", "peft", TOL, lambda f=fam: _outputs(f)))
    out += [
        Check("outputs, llama DoRA", "peft", TOL, lambda: _outputs("llama", use_dora=True)),
        Check("outputs, gpt2 Conv1D rsLoRA", "peft", TOL, lambda: _outputs("gpt2", use_rslora=True)),
        Check("trainable parameter count, t5 DoRA", "peft", 0.0, lambda: _counts("t5")),
        Check("hfx-saved adapter in PeftModel.from_pretrained (llama DoRA)", "peft", TOL, lambda: _hfx_to_peft("llama")),
        Check("peft-saved adapter in hfx.load (gpt2)", "peft", TOL, lambda: _peft_to_hfx("gpt2")),
        Check("20 training steps, relative loss difference (plain)", "peft", 1e-4, lambda: _training()),
        Check("20 training steps, relative loss difference (rsLoRA)", "peft", 1e-4, lambda: _training(use_rslora=True)),
        Check("20 training steps, relative loss difference (DoRA)", "peft", 1e-4, lambda: _training(use_dora=True)),
        Check("merge_and_unload, bert DoRA", "peft", TOL, lambda: _merged("bert")),
    ]
    return out
