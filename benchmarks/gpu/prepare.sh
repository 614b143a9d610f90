#!/usr/bin/env bash
# Run where the package registry is reachable: downloads the wheels a typical GPU image lacks (it has torch,
# transformers, peft, accelerate and sentence-transformers) into benchmarks/gpu/wheels/ (git-ignored), so that
# run.sh installs them with no network. Linux x86-64 wheels for the GPU machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")"
PYV=${GPU_PYTHON_VERSION:-3.12}
mkdir -p wheels
python -m pip download --quiet --dest wheels --only-binary=:all: --python-version "$PYV" \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform any bitsandbytes hydra-core omegaconf antlr4-python3-runtime gguf rich faiss-cpu vaderSentiment
# hfx itself travels as source (the working tree); its own dependencies beyond these are in the GPU image.
du -sh wheels
