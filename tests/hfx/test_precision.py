"""train.mixed_precision: `auto` follows the measured bf16/fp32 matmul ratio; fp16 on a CPU is refused.

The expected choices come from the rule in hfx.precision: bf16 only where it is measured faster than fp32.
"""

from __future__ import annotations

import pytest

from hfx import precision
from hfx.errors import HfxError


def _fake_probe(ratio: float):
    return lambda *a, **k: {"cpu": "test cpu", "torch": "x", "fp32_s": 1.0, "bf16_s": ratio, "bf16_over_fp32": ratio}


@pytest.mark.parametrize(("ratio", "expected"), [(0.4, "bf16"), (1.0, "no"), (12.0, "no")])
def test_auto_on_cpu_follows_the_measured_ratio(monkeypatch, ratio, expected):
    monkeypatch.setattr(precision, "cpu_bf16_probe", _fake_probe(ratio))
    choice = precision.resolve_mixed_precision("auto", "cpu")
    assert choice.mode == expected
    assert f"{ratio:.2f}x" in choice.reason and choice.warning == ""


def test_bf16_requested_on_a_cpu_without_native_bf16_warns_with_the_slowdown(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_probe", _fake_probe(13.0))
    choice = precision.resolve_mixed_precision("bf16", "cpu")
    assert choice.mode == "bf16" and "13.00x" in choice.warning


def test_fp16_on_cpu_and_unknown_values_are_one_line_errors():
    with pytest.raises(HfxError, match="fp16 is not supported on the CPU"):
        precision.resolve_mixed_precision("fp16", "cpu")
    with pytest.raises(HfxError, match="must be one of"):
        precision.resolve_mixed_precision("fp8", "cpu")


def test_probe_is_cached_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("HFX_CACHE", str(tmp_path))
    first = precision.cpu_bf16_probe(size=64, repeats=1)
    assert (tmp_path / "precision.json").is_file()
    assert precision.cpu_bf16_probe(size=64, repeats=1) == first  # read back, not measured again
    assert first["fp32_s"] > 0 and first["bf16_s"] > 0
