#!/usr/bin/env bash
# The project's test command: install (idempotent), then every test layer — unit (no Ray),
# serve (real Ray Serve, fake experts) and e2e (real Ray Serve + vLLM CPU experts over HTTP).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests "$@"
