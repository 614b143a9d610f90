"""``hfx validate plugin=lora``: hfx's LoRA against peft's on tiny random models (seconds, no download).

Each check adapts one tiny model with hfx and a copy of it with peft from the same RNG state
(:func:`hfx.testing.reference_twin`; both libraries' default target modules, peft's table) and returns the
largest difference: of the initial A and B, of the outputs once both share the same random adapter weights, of
outputs across the two libraries' save/load, of losses over 20 AdamW steps (relative), of the trainable
parameter counts, and of merged models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hfx import parity
from hfx.data.collate import IGNORE_INDEX
from hfx.parity import batch, logits
from hfx.validate import Check
from hfx_plugins.lora.inject import DEFAULT_TARGETS

__all__ = ["checks", "lora_tensors", "randomize"]

TOL = 1e-5  # fp32 outputs: the same sums in a different order differ by rounding only


def _pair(family: str, **fields: Any) -> tuple[nn.Module, nn.Module, Any]:
    from hfx.testing import reference_twin

    return reference_twin(family, "lora", "LoraConfig", **fields)


def lora_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors (``lora_*`` and ``modules_to_save``) by hfx's key (peft's ``base_model.model.`` removed).

    Each tensor keeps its parameter's shape: ``lora_A`` (r, in), ``lora_B`` (out, r), copies their module's own.
    """
    return {k.removeprefix("base_model.model."): v for k, v in model.state_dict().items()
            if "lora_" in k or "modules_to_save" in k}


@torch.no_grad()
def randomize(*models: nn.Module, seed: int = 1, scale: float = 0.1) -> None:
    """Add the same N(0, scale^2) noise to the adapter tensors of every model, key by key in sorted order, from a
    generator seeded ``seed`` (B starts at zero: without this the adapters would not change the outputs)."""
    tensors = [lora_tensors(m) for m in models]
    g = torch.Generator().manual_seed(seed)
    for key in sorted(tensors[0]):
        noise = torch.randn(tensors[0][key].shape, generator=g) * scale
        for t in tensors:
            t[key].add_(noise)


def _init(family: str) -> float:
    ours, theirs, _ = _pair(family, r=4)
    a, b = lora_tensors(ours), lora_tensors(theirs)
    return max((a[k] - b[k]).abs().max().item() for k in a) if a.keys() == b.keys() else float("inf")


def _outputs(family: str, **fields: Any) -> float:
    ours, theirs, tok = _pair(family, r=4, lora_alpha=8, **fields)
    randomize(ours, theirs)
    x = batch(tok, family)
    return (logits(ours, x) - logits(theirs, x)).abs().max().item()


def _counts(family: str) -> float:
    from hfx_plugins.lora.trainable import parameter_counts

    ours, theirs, _ = _pair(family, r=4, use_dora=True)
    return float(abs(parameter_counts(ours)[0] - theirs.get_nb_trainable_parameters()[0]))


def _hfx_to_peft(family: str) -> float:
    from hfx.testing import tiny_model

    ours, _, tok = _pair(family, r=4, use_dora=True)
    randomize(ours)
    return parity.hfx_to_peft_gap(ours, tiny_model(family)[0], batch(tok, family))


def _peft_to_hfx(family: str) -> float:
    from hfx.testing import tiny_model

    _, theirs, tok = _pair(family, r=4)
    randomize(theirs)
    return parity.peft_to_hfx_gap(theirs, tiny_model(family)[0], batch(tok, family))


def _training(**fields: Any) -> float:
    """Largest relative difference of the losses over 20 AdamW steps on one fixed batch."""
    ours, theirs, tok = _pair("llama", r=4, lora_alpha=8, **fields)
    x = batch(tok, "llama")
    x["labels"] = x["input_ids"].masked_fill(x["attention_mask"] == 0, IGNORE_INDEX)
    return parity.training_gap((ours, theirs), x, steps=20)


def _merged(family: str) -> float:
    from hfx_plugins.lora.model import merge_and_unload

    ours, theirs, tok = _pair(family, r=4, use_dora=True)
    randomize(ours, theirs)
    x = batch(tok, family)
    return (logits(merge_and_unload(ours), x) - logits(theirs.merge_and_unload(), x)).abs().max().item()


def checks() -> list[Check]:
    """``hfx validate plugin=lora``: init, outputs, counts, files, training and merges vs peft."""
    out = [Check("initial A and B, same seed (llama)", "peft", 0.0, lambda: _init("llama"))]
    for fam in ("bert", "llama", "gpt2", "t5"):  # the tiny families' model types, keys of peft's table
        label = f"outputs, {fam} ({', '.join(DEFAULT_TARGETS[fam])})"
        out.append(Check(label, "peft", TOL, lambda f=fam: _outputs(f)))
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
