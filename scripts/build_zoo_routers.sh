#!/usr/bin/env bash
# Rebuilds the routers shipped with the default deployment, from the zoo's own prompts only:
#   1. builds the zoo (cached) and measures every zoo expert on training-distribution prompts
#      (disjoint from the held-out set) -> eval/data/zoo_table.json + eval/data/zoo_prices.json;
#   2. fits category, skill and cost_aware on that table -> deployments/routers/zoo-*.joblib.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" -m router_service.zoo build --out models/zoo
"$PY" -m router_service.zoo table --models-dir models/zoo --out eval/data/zoo_table.json \
    --prices eval/data/zoo_prices.json
mkdir -p deployments/routers
for strategy in category skill cost_aware; do
    extra=()
    [ "$strategy" = category ] && extra=(--param default_expert=general)
    "$PY" -m router_service.fit --strategy "$strategy" --train eval/data/zoo_table.json \
        --prices eval/data/zoo_prices.json "${extra[@]}" --out "deployments/routers/zoo-$strategy.joblib"
done
