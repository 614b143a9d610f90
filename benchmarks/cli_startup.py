"""Wall time of the light ``hfx`` commands, beside ``python -c "import torch"``.

    python benchmarks/cli_startup.py            # 9 rounds; writes benchmarks/results/cli_startup.{json,md}

Each round runs every command once, in a fresh process (``subprocess.run`` of the installed ``hfx`` console
script), in the same order, so that all commands see the same load on a shared machine; the report gives
the median and the minimum wall time over the rounds, and the median CPU time (user + sys). The commands:

- ``hfx --help``, ``hfx plugins``, ``hfx config plugin=lora`` (the full table of keys with their help);
- a config error, ``hfx config plugin=lora lora.r=-1`` (rejected by ``LoraConfig.__post_init__``);
- ``python -c "import torch"``: what each of these would cost at least if it imported torch;
- ``python -c "pass"``: the interpreter's own start-up, the floor under every command.

None of the hfx commands should import torch, transformers, peft or bitsandbytes
(tests/hfx/test_cli_startup.py checks that); the target is under 1 s each.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from hfx.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
HFX = str(Path(sys.executable).with_name("hfx"))

COMMANDS: dict[str, list[str]] = {
    "hfx --help": [HFX, "--help"],
    "hfx plugins": [HFX, "plugins"],
    "hfx config plugin=lora": [HFX, "config", "plugin=lora"],
    "hfx config plugin=lora lora.r=-1 (error)": [HFX, "config", "plugin=lora", "lora.r=-1"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    'python -c "pass"': [sys.executable, "-c", "pass"],
}
EXPECTED_STATUS = {"hfx config plugin=lora lora.r=-1 (error)": 2}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(cmd: list[str], expected: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys) of one run of ``cmd``; exits if its status is not ``expected``."""
    cpu, start = _cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != expected:
        sys.exit(f"`{shlex.join(cmd)}` exited {done.returncode} (expected {expected}):\n{done.stderr[-2000:]}")
    return seconds, _cpu() - cpu


def measure(rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Run every command once per round, in order; return ``(wall s, CPU s)`` of each, round by round."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for name, cmd in COMMANDS.items():  # warm the file cache once; not counted
        _time(cmd, EXPECTED_STATUS.get(name, 0))
    for _ in range(rounds):
        for name, cmd in COMMANDS.items():
            times[name].append(_time(cmd, EXPECTED_STATUS.get(name, 0)))
    return times


def report(times: dict[str, list[tuple[float, float]]], argv: list[str], load: tuple[float, float]) -> tuple[dict, str]:
    """The JSON record and the Markdown table of the measured times."""
    torch_median = statistics.median(w for w, _ in times['python -c "import torch"'])
    rows = {}
    for name, runs in times.items():
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        rows[name] = {"median_s": round(statistics.median(wall), 3), "min_s": round(min(wall), 3),
                      "median_cpu_s": round(statistics.median(cpu), 3),
                      "ratio_to_import_torch": round(statistics.median(wall) / torch_median, 3),
                      "runs_s": [round(x, 3) for x in wall], "runs_cpu_s": [round(x, 3) for x in cpu]}
    env = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": version("torch"),
           "transformers": version("transformers"), "load_average_before_after": [round(x, 2) for x in load]}
    command = shlex.join(["python", "benchmarks/cli_startup.py", *argv])
    record = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "environment": env, "rounds": len(next(iter(times.values()))), "results": rows}
    lines = [
        "# hfx CLI start-up time",
        "",
        f"Command: `{command}`  ",
        f"Date: {record['date']}; {env}  ",
        f"Each command ran once per round in a fresh process, {record['rounds']} rounds, interleaved (same load "
        "for all). Wall time grows with the load of a shared CPU (load average above); the CPU time (user + sys "
        "of the process) does not, and is the better guide to the cost itself.",
        "",
        "| command | median wall (s) | min wall (s) | median CPU (s) | median wall / import torch |",
        "|---|---|---|---|---|",
        *(f"| `{name}` | {r['median_s']} | {r['min_s']} | {r['median_cpu_s']} | {r['ratio_to_import_torch']} |"
          for name, r in rows.items()),
        "",
    ]
    return record, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="runs of each command (median and min are reported)")
    parser.add_argument("--no-write", action="store_true", help="print the report instead of writing results files")
    args = parser.parse_args()
    before = os.getloadavg()[0]
    times = measure(args.rounds)
    record, markdown = report(times, sys.argv[1:], (before, os.getloadavg()[0]))
    print(markdown)
    if not args.no_write:
        atomic_write_json(RESULTS / "cli_startup.json", record)
        atomic_write_text(RESULTS / "cli_startup.md", markdown)


if __name__ == "__main__":
    main()
