"""``hfx validate plugin=prefix_tuning``: hfx's prefix tuning against peft's on tiny random models (seconds).

Each check builds a tiny model (``hfx.testing``) with hfx and a copy with peft's ``get_peft_model`` from the same
RNG state and returns the largest difference: of the logits (same initial prefix), across the two libraries'
save/load, of the losses over 20 AdamW steps (relative), and of greedy ``generate()`` against argmax decoding
by plain forward passes (the fraction of tokens that differ; 0 means the prefix is used in every step).
peft 0.21.2's own ``generate()`` drops the prefix on transformers >= 5.24 (it passes ``past_key_values``, which
5.24 renamed ``cache``), so generation is compared with hfx's own forward pass, not with peft's generate.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hfx import parity
from hfx.parity import batch, logits
from hfx.validate import Check
from hfx_plugins.prompt_learning import generation_mismatch

__all__ = ["batch", "checks", "generation_mismatch", "hfx_to_peft", "logits", "pair", "peft_to_hfx",
           "sliding_gap", "training_gap"]

TOL = 1e-5  # fp32 logits: the same sums, possibly in another order
TASKS = {"llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "t5": "SEQ_2_SEQ_LM"}


def pair(family: str, dropout: float | None = None, **fields: Any) -> tuple[nn.Module, nn.Module, Any]:
    """(hfx model, peft model, tokenizer): the same tiny base with the same initial prefix."""
    from hfx.testing import reference_twin

    fields.setdefault("num_virtual_tokens", 4)
    return reference_twin(family, "prefix_tuning", "PrefixTuningConfig", dropout=dropout, **fields)


def outputs_gap(family: str, **fields: Any) -> float:
    """Largest eval-mode logit difference, hfx vs peft's ``PrefixTuningConfig`` twin, on :func:`hfx.parity.batch`."""
    ours, theirs, tok = pair(family, **fields)
    x = batch(tok, family)
    return (logits(ours, x) - logits(theirs, x)).abs().max().item()


def hfx_to_peft(family: str, **fields: Any) -> float:
    """Save with hfx, load with ``PeftModel.from_pretrained`` (any warning but FutureWarning is an error)."""
    from hfx.testing import tiny_model

    ours, _, tok = pair(family, **fields)
    return parity.hfx_to_peft_gap(ours, tiny_model(family)[0], batch(tok, family))


def peft_to_hfx(family: str, **fields: Any) -> float:
    """Save with peft's ``save_pretrained``, load with ``hfx.load``; largest logit difference."""
    from hfx.testing import tiny_model

    _, theirs, tok = pair(family, **fields)
    return parity.peft_to_hfx_gap(theirs, tiny_model(family)[0], batch(tok, family))


def training_gap(family: str, steps: int = 20, **fields: Any) -> float:
    """Largest relative difference of the losses over ``steps`` AdamW steps on one fixed batch (no dropout)."""
    ours, theirs, tok = pair(family, dropout=0.0, **fields)
    return parity.training_gap((ours, theirs), parity.with_labels(batch(tok, family), family, tok.pad_token_id), steps)


def _generation(family: str, **fields: Any) -> float:
    ours, _, tok = pair(family, **fields)
    return generation_mismatch(ours, tok, family)


def sliding_gap(model_type: str, window: int = 8, n: int = 3) -> float:
    """Largest logit difference, hfx vs peft, on a tiny ``model_type`` config with a sliding window of ``window``
    positions, for a (2, window - n) batch: prefix + sequence fill the window exactly (mistral: every layer
    sliding; gemma2: sliding and global layers alternate)."""
    import copy

    import torch
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    import hfx

    cfg = AutoConfig.for_model(model_type, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                               num_hidden_layers=2, intermediate_size=64, vocab_size=96, sliding_window=window,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_config(cfg).eval()
        torch.manual_seed(1)
        ours = hfx.apply(copy.deepcopy(base), "prefix_tuning", num_virtual_tokens=n)
        torch.manual_seed(1)
        theirs = get_peft_model(copy.deepcopy(base), PrefixTuningConfig(num_virtual_tokens=n, task_type="CAUSAL_LM"))
        ids = torch.randint(3, 96, (2, window - n))
    with torch.no_grad():
        return (ours(input_ids=ids).logits - theirs.eval()(input_ids=ids).logits).abs().max().item()


def checks() -> list[Check]:
    """``hfx validate plugin=prefix_tuning``: logits, both save/load directions, 20 AdamW steps and greedy generation vs peft
    (llama, gpt2, t5), and logits on sliding-window models (mistral, gemma2).
    """
    out = []
    for fam in ("llama", "gpt2", "t5"):
        out += [
            Check(f"logits, {fam}, same initial prefix", "peft", TOL, lambda f=fam: outputs_gap(f)),
            Check(f"logits, {fam}, prefix_projection", "peft", TOL, lambda f=fam: outputs_gap(f, prefix_projection=True)),
            Check(f"hfx-saved prefix in PeftModel.from_pretrained, no warning ({fam})", "peft", TOL,
                  lambda f=fam: hfx_to_peft(f, prefix_projection=f == "llama")),
            Check(f"peft-saved prefix in hfx.load ({fam})", "peft", TOL, lambda f=fam: peft_to_hfx(f)),
            Check(f"20 AdamW steps, relative loss difference ({fam})", "peft", 1e-4, lambda f=fam: training_gap(f)),
            Check(f"greedy generate() = argmax of forward with the prefix ({fam}, token mismatch rate)", "transformers",
                  0.0, lambda f=fam: _generation(f)),
        ]
    out.append(Check("20 AdamW steps, relative loss difference (llama, prefix_projection)", "peft", 1e-4,
                     lambda: training_gap("llama", prefix_projection=True)))
    for mt in ("mistral", "gemma2"):
        out.append(Check(f"logits, {mt} with a sliding window of 8, prefix + sequence = window", "peft", TOL,
                         lambda m=mt: sliding_gap(m)))
    return out
