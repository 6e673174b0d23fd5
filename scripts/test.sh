#!/usr/bin/env bash
# The test command (README and CI): lint, the docs build, then every test including the real
# bundled models.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check canonlabel tests benchmarks
.venv/bin/mypy canonlabel
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -q -d "$(mktemp -d)"
.venv/bin/python -m pytest -q "$@"
