"""``hfx validate plugin=lora`` passes, and its twin adapts the layers peft adapts by default.

Expected values: peft's own default targets (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`` in
``peft.utils.constants``) and each check's tolerance against peft."""

from __future__ import annotations

import pytest
from lora_helpers import lora_tensors, pair

from hfx_plugins.lora.checks import checks


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "t5"])
def test_twin_adapts_peft_default_targets(family: str) -> None:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    ours, theirs, _ = pair(family, r=4)
    adapted = {k.split(".lora_A.")[0].rsplit(".", 1)[-1] for k in lora_tensors(theirs) if ".lora_A." in k}
    assert adapted == set(PEFT_DEFAULTS[family])  # gpt2: c_attn only, not c_proj
    assert lora_tensors(ours).keys() == lora_tensors(theirs).keys()


def test_every_validate_check_is_within_tolerance() -> None:
    for check in checks():
        gap = check.run()
        assert gap <= check.tolerance, f"{check.name}: {gap} > {check.tolerance}"


def test_runs_on_one_thread() -> None:
    # tests/plugins/lora/conftest.py: one thread even when HFX_TEST_THREADS asks the session for more
    import torch

    assert torch.get_num_threads() == 1
