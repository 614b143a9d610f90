"""The light commands import no torch, and every command is quiet at default verbosity.

``hfx --help``, ``hfx plugins``, ``hfx config plugin=X`` and every config error (unknown plugin, malformed
override, unknown key, wrong value) must not import torch, transformers, peft or bitsandbytes: they take
seconds to import and nothing in these commands needs them. Each case runs the CLI in a fresh interpreter
(a subprocess: this test process has torch imported already) and reads ``sys.modules`` after ``main()``
returns. The expected value is the empty set by definition of the requirement. The wall times are measured
by benchmarks/cli_startup.py, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hfx import registry

HEAVY = ("torch", "transformers", "peft", "bitsandbytes")

# Runs hfx's main() once per argument list, in order, in one fresh interpreter; after each call records its
# exit status, what it wrote on stderr, and the heavy modules imported so far (so the first command that
# imports one is the one to blame).
_PROBE = f"""
import contextlib, io, json, sys
from hfx.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # --help
            status = exc.code
    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
    results.append({{"argv": argv, "status": status, "stderr": err.getvalue(), "heavy": heavy}})
print(json.dumps(results))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("HFX_DEBUG", "TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS")}


def run_probe(commands: list[list[str]]) -> list[dict]:
    """Run each command's ``main(argv)`` in one subprocess; one result dict per command."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(commands)], capture_output=True, text=True,
                          timeout=300, env=_env(), check=False)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_heavy(results: list[dict]) -> str:
    """"" when no command imported a heavy module, else which command did first and what."""
    culprit = next((r for r in results if r["heavy"]), None)
    return "" if culprit is None else f"`hfx {' '.join(culprit['argv'])}` imported {culprit['heavy']}"


_ERROR_CASES = [
    ["config", "plugin=nope"],  # unknown plugin
    ["config", "plugin=lora", "lora.r=[1"],  # malformed override
    ["config", "plugin=lora", "lora.rr=4"],  # unknown key
    ["config", "plugin=lora", "lora.r=abc"],  # wrong type
    ["config", "plugin=lora", "lora.r=-1"],  # rejected by LoraConfig.__post_init__
    ["config", "plugin=lora", "train.lr_scheduler=nope"],  # rejected by TrainConfig.__post_init__
    ["run", "plugin=lora", "lora.rr=4"],  # the same errors from `hfx run`, before the runner is imported
    ["validate", "plugin=nope"],
]


def test_help_plugins_and_config_import_no_torch() -> None:
    commands = [["--help"], ["plugins"], *(["config", f"plugin={name}"] for name in registry.available())]
    results = run_probe(commands)
    assert [r["status"] for r in results] == [0] * len(commands), [(r["argv"], r["stderr"]) for r in results]
    assert not first_heavy(results), first_heavy(results)


def test_config_errors_import_no_torch_and_print_one_line() -> None:
    results = run_probe(_ERROR_CASES)
    for r in results:
        assert r["status"] == 2, r
        # Only hfx's own line: no library banner, warning or progress bar around it.
        lines = r["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("hfx: error: "), r
    assert not first_heavy(results), first_heavy(results)


def test_quiet_keeps_own_warnings_and_drops_library_ones() -> None:
    """hfx's quiet mode drops a warning raised inside a library but shows one raised by hfx code."""
    code = (
        "import sys, types, warnings\n"
        "from hfx.quiet import quiet_libraries\n"
        "quiet_libraries()\n"
        "lib = types.ModuleType('somelib'); exec('import warnings\\ndef f(): warnings.warn(\"LIBRARY\")', lib.__dict__)\n"
        "own = types.ModuleType('hfx_plugins.x'); exec('import warnings\\ndef f(): warnings.warn(\"OWN\")', own.__dict__)\n"
        "lib.f(); own.f()\n"
        "import logging; logging.getLogger('bitsandbytes.backends.cpu.ops').warning('BANNER')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(),
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "OWN" in proc.stderr and "LIBRARY" not in proc.stderr and "BANNER" not in proc.stderr, proc.stderr
    verbose = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**_env(), "HFX_DEBUG": "1"}, check=False)
    assert "LIBRARY" in verbose.stderr and "BANNER" in verbose.stderr, verbose.stderr
