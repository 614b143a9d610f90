"""One GRPO / RLOO update equals trl 1.16's GRPOTrainer / RLOOTrainer on fixed completions (tiny Llama + LoRA).

Expected values: trl 1.16 itself, run beside hfx on the same model, prompts, completions and rewards
(``hfx_plugins.grpo.checks.one_update_diffs``); tolerance 1e-5 as ``hfx validate``.
"""

from __future__ import annotations

import pytest

from hfx_plugins.grpo.checks import TOL, UPDATES, one_update_diffs


@pytest.mark.parametrize("name", list(UPDATES))
def test_one_update_equals_trl(name: str) -> None:
    diffs = one_update_diffs(*UPDATES[name])
    assert diffs["moved"] > 1e-3  # the update did move the LoRA weights (B starts at zero)
    assert diffs["advantages"] <= TOL and diffs["loss"] <= TOL and diffs["weights"] <= TOL, diffs

