#!/usr/bin/env bash
# On the GPU machine (no network), from the repository root: install the carried wheels and hfx (no deps),
# then run the prepared benchmark. Under 8 minutes on one H200; results in benchmarks/results/gpu.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install --quiet --no-index --find-links benchmarks/gpu/wheels benchmarks/gpu/wheels/*.whl
python -m pip install --quiet --no-deps --no-build-isolation -e .
PYTHONUNBUFFERED=1 python benchmarks/gpu/run.py --device cuda "$@"
