#!/usr/bin/env bash
# The project's test command: install (idempotent), the Debian packages tests use (redis-server,
# chromium), lint, format and type checks, then every test
# layer — unit (no Ray), serve (real Ray Serve, fake experts) and e2e (real Ray Serve + vLLM CPU
# experts over HTTP).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system_packages.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# No path given: pytest runs `testpaths` (pyproject.toml: tests/). A path narrows the run, e.g.
# `bash scripts/test.sh tests/serve -x`; options alone (-k, -x) keep every layer.
exec .venv/bin/python -m pytest "$@"
