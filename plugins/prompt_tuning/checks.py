"""``hfx validate plugin=prompt_tuning``: hfx's prompt tuning against peft's on tiny random models (seconds).

Each check builds a tiny model (``hfx.testing``) with hfx and a copy with peft's ``get_peft_model`` from the same
RNG state and returns the largest difference: of the initial prompt (RANDOM, SAMPLE_VOCAB and TEXT init), of the
logits (peft's decoder logits include the ``n`` virtual positions, which hfx drops: compared from position ``n``),
across the two libraries' save/load, of the losses over 20 AdamW steps (relative), and of greedy
``generate()`` against argmax decoding by plain forward passes (the fraction of tokens that differ).
"""

from __future__ import annotations

import tempfile
from typing import Any

from torch import nn

from hfx import parity
from hfx.parity import batch, logits
from hfx.validate import Check
from hfx_plugins.prompt_learning import generation_mismatch

__all__ = ["batch", "checks", "generation_mismatch", "hfx_to_peft", "init_gap", "logits", "pair", "peft_to_hfx",
           "training_gap"]

TOL = 1e-5
N = 4  # virtual tokens
TASKS = {"llama": "CAUSAL_LM", "gpt2": "CAUSAL_LM", "t5": "SEQ_2_SEQ_LM"}
INIT_TEXT = "classify the value of the list"


def pair(family: str, dropout: float | None = None, **fields: Any) -> tuple[nn.Module, nn.Module, Any]:
    """(hfx model, peft model, tokenizer): the same tiny base with the same initial prompt."""
    from hfx.testing import reference_twin, tiny_model

    fields.setdefault("num_virtual_tokens", N)
    with tempfile.TemporaryDirectory() as tmp:
        if fields.get("prompt_tuning_init") == "TEXT":  # peft loads the tokenizer from a folder
            tiny_model(family)[1].save_pretrained(tmp)
            fields.update(prompt_tuning_init_text=INIT_TEXT, tokenizer_name_or_path=tmp)
        return reference_twin(family, "prompt_tuning", "PromptTuningConfig", dropout=dropout, **fields)


def start(family: str) -> int:
    """First position of peft's logits that hfx returns (decoders: after the virtual tokens)."""
    return 0 if family == "t5" else N


def init_gap(family: str, init: str) -> float:
    """Largest difference of the initial (n * s, d) prompt embeddings, hfx vs peft, for ``prompt_tuning_init=init``."""
    ours, theirs, _ = pair(family, prompt_tuning_init=init)
    return (ours.prompt_encoder.embedding.weight - theirs.prompt_encoder.default.embedding.weight).abs().max().item()


def outputs_gap(family: str, **fields: Any) -> float:
    """Largest eval-mode logit difference, hfx vs peft's ``PromptTuningConfig`` twin, on :func:`hfx.parity.batch`."""
    ours, theirs, tok = pair(family, **fields)
    x = batch(tok, family)
    return (logits(ours, x) - logits(theirs, x, start(family))).abs().max().item()


def hfx_to_peft(family: str, **fields: Any) -> float:
    """Save with hfx, load with ``PeftModel.from_pretrained`` (any warning but FutureWarning is an error)."""
    from hfx.testing import tiny_model

    ours, _, tok = pair(family, **fields)
    return parity.hfx_to_peft_gap(ours, tiny_model(family)[0], batch(tok, family), start(family))


def peft_to_hfx(family: str, **fields: Any) -> float:
    """Save with peft's ``save_pretrained``, load with ``hfx.load``; largest logit difference."""
    from hfx.testing import tiny_model

    _, theirs, tok = pair(family, **fields)
    return parity.peft_to_hfx_gap(theirs, tiny_model(family)[0], batch(tok, family), start(family))


def training_gap(family: str, steps: int = 20, **fields: Any) -> float:
    """Largest relative difference of the losses over ``steps`` AdamW steps on one fixed batch (no dropout)."""
    ours, theirs, tok = pair(family, dropout=0.0, **fields)
    return parity.training_gap((ours, theirs), parity.with_labels(batch(tok, family), family, tok.pad_token_id), steps)


def _generation(family: str) -> float:
    ours, _, tok = pair(family)
    return generation_mismatch(ours, tok, family)


def checks() -> list[Check]:
    """``hfx validate plugin=prompt_tuning``: logits, both save/load directions, 20 AdamW steps and greedy generation vs peft
    (llama, gpt2, t5).
    """
    out = [Check(f"initial prompt, {init} (llama)", "peft", 0.0, lambda i=init: init_gap("llama", i))
           for init in ("RANDOM", "SAMPLE_VOCAB", "TEXT")]
    for fam in ("llama", "gpt2", "t5"):
        out += [
            Check(f"logits, {fam}, same initial prompt", "peft", TOL, lambda f=fam: outputs_gap(f)),
            Check(f"hfx-saved prompt in PeftModel.from_pretrained, no warning ({fam})", "peft", TOL,
                  lambda f=fam: hfx_to_peft(f, prompt_tuning_init="TEXT" if f == "gpt2" else "RANDOM")),
            Check(f"peft-saved prompt in hfx.load ({fam})", "peft", TOL, lambda f=fam: peft_to_hfx(f)),
            Check(f"20 AdamW steps, relative loss difference ({fam})", "peft", 1e-4, lambda f=fam: training_gap(f)),
            Check(f"greedy generate() = argmax of forward with the prompt ({fam}, token mismatch rate)",
                  "transformers", 0.0, lambda f=fam: _generation(f)),
        ]
    return out
