"""The prepared GPU benchmark's CPU path runs end to end on tiny models, so the script cannot rot.

Only that it runs and writes every section without an error is checked: its figures are measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "run.py"), "--device", "cpu", "--smoke",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert set(result["sections"]) == {"quant", "lora", "qlora", "embed"}
    assert all("error" not in s for s in result["sections"].values())
    quant = {r["method"]: r["relative_error"] for r in result["sections"]["quant"]["result"]}
    assert 0 < quant["hfx int8 per channel"] < quant["hfx int4 g64"] < 1
