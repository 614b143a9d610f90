"""Known faults of the matrices: cells that neither pass nor refuse cleanly today, each a strict xfail.

A cell listed here must fail (strict): when a fix lands, its test passes, pytest reports the XPASS as a failure,
and the entry goes (then ``python tests/matrix/mx_table.py`` rewrites the README). Each reason says what is wrong.
"""

from __future__ import annotations

__all__ = ["FAULTS"]

_SAVE_CARRIES = ("{x}'s folder also holds the {y} weights of the same model, and hfx.load refuses it "
                 "(unexpected keys): hfx.load does not load what hfx.save wrote")
_CACHE = ("generate() continued from its returned cache gives other tokens than a fresh run "
          "(the prompt's virtual tokens are counted in the cache length)")

FAULTS: dict[str, str] = {
    # hfx.save writes one folder per plugin, and a plugin that saves whole weights takes the other's along
    "quant+ppo": _SAVE_CARRIES.format(x="quant", y="ppo value-head"),
    "quant+prefix_tuning": _SAVE_CARRIES.format(x="quant", y="prefix"),
    "qat+ppo": _SAVE_CARRIES.format(x="qat", y="ppo value-head"),
    "qat+prefix_tuning": _SAVE_CARRIES.format(x="qat", y="prefix"),
    "qat+prompt_tuning": _SAVE_CARRIES.format(x="qat", y="prompt"),
    "finetune+ppo": _SAVE_CARRIES.format(x="finetune", y="ppo value-head"),
    "finetune+prefix_tuning": _SAVE_CARRIES.format(x="finetune", y="prefix"),
    "finetune+lora": _SAVE_CARRIES.format(x="finetune", y="LoRA"),
    "finetune+quant": _SAVE_CARRIES.format(x="finetune", y="quantized"),
    "qat+finetune": "finetune's folder holds qat's layers converted to quant's packed keys; hfx.load refuses it",
    "embed+quant": "the sentence-transformers folder holds quant's packed keys; hfx.load refuses it",
    "quant+embed": "the sentence-transformers folder holds quant's packed keys; hfx.load refuses it",
    "lora+embed": "the sentence-transformers folder holds the LoRA layers' keys; hfx.load refuses it",
    "ppo+quant": "quant's all-linear takes ppo's value head; hfx.load then fails with KeyError 'summary.weight'",
    "lora+quant": "quant over LoRA's base layers: after hfx.save/hfx.load the logits move by 0.48",
    "lora+qat": "qat over LoRA's base layers: after hfx.save/hfx.load the logits move by 0.48",
    "qat+embed": "after hfx.save/hfx.load the embeddings move by 0.007 (qat saves quant's packed layers)",
    "qat+reward": "after hfx.save/hfx.load the scores move by 3e-4 (qat saves quant's packed layers)",
    "embed+finetune": "finetune accepts an Embedder; hfx.save then crashes (AttributeError: no save_pretrained)",
    "reward+finetune": "finetune accepts a RewardModel; hfx.save then crashes (AttributeError: no save_pretrained)",
    "reward+embed": "embed accepts a RewardModel; encoding crashes (AttributeError: no last_hidden_state)",
    "quant+reward": "reward's wrapper drops quant from the record of applied plugins; hfx.save refuses without "
                    "naming quant",
    # generate() under prompt tuning
    "prompt_tuning+prompt_tuning": _CACHE,
    "prompt_tuning+finetune": _CACHE,
    "prompt_tuning+ppo": _CACHE,
    "prompt_tuning+quant": _CACHE,
    "finetune+prompt_tuning": _CACHE,
    "ppo+prompt_tuning": _CACHE,
    "quant+prompt_tuning": _CACHE,
}
