"""Contexts that nest restore what they found: ``disable_adapters`` inside ``disable_adapters``, with adapters
unmerged, merged, and with a ``modules_to_save`` head.

peft's own ``disable_adapter`` (0.18) re-enables on the inner exit what the outer block disabled, so
peft is not the reference here: the expected values are the plain tiny model (inside every block) and the
adapted model as it was before the outer block (after it).
"""

from __future__ import annotations

import pytest
import torch
from lora_helpers import batch, logits, pair, randomize

from hfx.testing import tiny_model
from hfx_plugins.lora import LoraLayer, disable_adapters, merge_adapter


def _setup(family: str, merged: bool) -> tuple[torch.nn.Module, dict, torch.Tensor, torch.Tensor]:
    ours, _, tok = pair(family, r=4, lora_alpha=8)
    randomize(ours)
    if family == "bert":  # the new head is a modules_to_save copy: perturb it so disabling it shows
        with torch.no_grad():
            for name, p in ours.named_parameters():
                if ".modules_to_save." in name:
                    p.add_(0.5)
    inputs = batch(tok, family)
    base = logits(tiny_model(family)[0], inputs)  # the plain model: the same seed-0 weights, no adapter
    if merged:
        merge_adapter(ours)
    adapted = logits(ours, inputs)
    assert (adapted - base).abs().max() > 1e-3  # the adapter changes the output, so a leak would show
    return ours, inputs, base, adapted


@pytest.mark.parametrize(("family", "merged"), [("llama", False), ("llama", True), ("bert", False), ("bert", True)])
def test_inner_exit_keeps_the_outer_block_disabled(family: str, merged: bool) -> None:
    ours, inputs, base, adapted = _setup(family, merged)
    merged_before = {id(m): list(m.merged_adapters) for m in ours.modules() if isinstance(m, LoraLayer)}
    with disable_adapters(ours):
        with disable_adapters(ours):
            assert (logits(ours, inputs) - base).abs().max() <= 1e-5
        assert (logits(ours, inputs) - base).abs().max() <= 1e-5  # still the base after the inner exit
        with disable_adapters(ours), disable_adapters(ours):  # three deep
            assert (logits(ours, inputs) - base).abs().max() <= 1e-5
        assert (logits(ours, inputs) - base).abs().max() <= 1e-5
    assert (logits(ours, inputs) - adapted).abs().max() <= 1e-5  # the adapted model back after the outer exit
    assert {id(m): list(m.merged_adapters) for m in ours.modules() if isinstance(m, LoraLayer)} == merged_before


def test_an_error_in_the_inner_block_still_restores_both_levels() -> None:
    ours, inputs, base, adapted = _setup("llama", merged=True)
    with disable_adapters(ours):
        with pytest.raises(RuntimeError), disable_adapters(ours):
            raise RuntimeError("inside")
        assert (logits(ours, inputs) - base).abs().max() <= 1e-5
    assert (logits(ours, inputs) - adapted).abs().max() <= 1e-5


def test_a_merge_inside_the_block_is_undone_on_exit() -> None:
    ours, inputs, base, adapted = _setup("llama", merged=False)
    with disable_adapters(ours):
        merge_adapter(ours)  # merged into the weights while disabled: the block must still leave it as found
    assert not any(m.merged_adapters for m in ours.modules() if isinstance(m, LoraLayer))
    assert (logits(ours, inputs) - adapted).abs().max() <= 1e-5
