"""LoRA's default targets (``target_modules`` unset) are peft's, for every model type of peft's default table.

The expected targets come from peft itself: its table
(``peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``) and the layers its
``get_peft_model`` adapts on the same tiny random model. Four types hfx refused before (gemma3_text, bloom,
gptj, deberta-v2) are built from tiny configs that keep each family's layer names; the adapter hfx saves
must load in peft and give the same outputs as hfx's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import hfx
from hfx_plugins.lora.checks import randomize
from hfx_plugins.lora.inject import DEFAULT_TARGETS, PEFT_DEFAULT_TARGETS

peft_constants = pytest.importorskip("peft.utils.constants")

_SMALL = {"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 64,
          "vocab_size": 96}
TINY: dict[str, tuple[Any, dict[str, Any]]] = {  # model type -> (auto class, config fields of a tiny model)
    "gemma3_text": (AutoModelForCausalLM, {**_SMALL, "num_key_value_heads": 2, "head_dim": 8,
                                           "sliding_window": 16, "max_position_embeddings": 64}),
    "bloom": (AutoModelForCausalLM, {"hidden_size": 32, "n_head": 4, "n_layer": 2, "vocab_size": 96}),
    "gptj": (AutoModelForCausalLM, {"n_embd": 32, "n_head": 4, "n_layer": 2, "rotary_dim": 4, "vocab_size": 96,
                                    "n_positions": 64}),
    "deberta-v2": (AutoModel, {**_SMALL, "max_position_embeddings": 64}),
}


def test_the_table_is_peft_s_entry_for_entry() -> None:
    # Source: the installed peft's own table (hfx's copy is of peft 0.21.2, the lower bound).
    assert peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING == PEFT_DEFAULT_TARGETS
    assert all(DEFAULT_TARGETS[k] == v for k, v in PEFT_DEFAULT_TARGETS.items())  # peft's wins where both name one


def _tiny(model_type: str) -> torch.nn.Module:
    cls, fields = TINY[model_type]
    torch.manual_seed(0)
    return cls.from_config(AutoConfig.for_model(model_type, **fields)).eval()


def _adapted(model: torch.nn.Module) -> set[str]:
    """Paths (without peft's ``base_model.model.`` prefix) of the layers holding a ``lora_A``."""
    names = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_modules() if n.endswith(".lora_A")}
    return {n.removeprefix("base_model.model.") for n in names}


@pytest.mark.parametrize("model_type", list(TINY))
def test_default_targets_are_peft_s_and_the_adapter_loads_in_peft(model_type: str, tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    ours = hfx.apply(_tiny(model_type), "lora", r=4)  # refused before: no default for this model type
    theirs = get_peft_model(_tiny(model_type), LoraConfig(r=4))  # peft picks its default targets
    assert _adapted(ours) == _adapted(theirs) and _adapted(ours)
    randomize(ours, seed=1)  # nonzero B: the adapter changes the outputs
    hfx.save(ours, tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(_tiny(model_type), tmp_path / "adapter").eval()
    ids = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = _tiny(model_type)(input_ids=ids)
        got, want = ours(input_ids=ids), loaded(input_ids=ids)
    key = "logits" if hasattr(got, "logits") else "last_hidden_state"
    assert not torch.allclose(got[key], base[key])  # the adapter is in the outputs
    torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)  # peft computes the same
