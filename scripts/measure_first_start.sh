#!/usr/bin/env bash
# Measures the README's first command from nothing: a fresh clone, a new .venv, an empty model cache.
# Prints the time to install, and the time `serve run deployments/coe.yaml` takes to answer /health
# with every expert healthy (this first start trains the specialists, converts the generalist, measures
# every model and fits the routers). Asks two questions, stops the service, and times a later start
# (everything cached) the same way.
# Usage: bash scripts/measure_first_start.sh [WORKDIR]   (default /tmp/coe-first-start)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-/tmp/coe-first-start}"
rm -rf "$work"
git clone -q "$repo" "$work"
ln -sfn "$repo/../shared" "$work/../shared" 2>/dev/null || true
cd "$work"
t0=$(date +%s)
bash scripts/setup.sh
t1=$(date +%s)
. .venv/bin/activate
# Healthy = every expert application of coe.yaml found by the router and healthy. The expected ids are
# read once; each poll is curl plus a bare `python3 -c` (no project imports), so that polling every
# 2 s takes little CPU from the start it measures.
expected=$(python -c 'from deployments.serve_config import load_serve_config as f; print(*f("deployments/coe.yaml").expert_ids)')
all_experts_healthy() {
    curl -sf --max-time 5 http://127.0.0.1:8000/health | python3 -c '
import json, sys
try:
    health = json.load(sys.stdin)
except ValueError:  # not up yet: curl printed nothing
    sys.exit(1)
sys.exit(0 if health.get("status") == "ok" and set(sys.argv[1:]) <= set(health.get("experts", {})) else 1)
' $expected
}
pid=
# A backgrounded `serve run` ignores SIGINT: stop it with TERM, then stop the local Ray cluster it started
# (`ray stop --force` stops every Ray process on this machine).
stop_service() {
    [ -n "$pid" ] && { kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true; }
    pid=
    ray stop --force >/dev/null 2>&1 || true
}
trap stop_service EXIT
# Starts `serve run deployments/coe.yaml` and returns once every expert is healthy; gives up after
# MEASURE_TIMEOUT_S (default 3600 s) rather than wait on a start that hangs.
start_until_healthy() {
    RAY_ADDRESS=local serve run deployments/coe.yaml > "$1" 2>&1 &
    pid=$!
    local deadline=$((SECONDS + ${MEASURE_TIMEOUT_S:-3600}))
    until all_experts_healthy; do
        kill -0 $pid 2>/dev/null || { tail -50 "$1"; echo "serve run exited"; exit 1; }
        [ $SECONDS -lt $deadline ] || { tail -50 "$1"; echo "not healthy after ${MEASURE_TIMEOUT_S:-3600} s"; exit 1; }
        sleep 2
    done
}
start_until_healthy serve.log
t2=$(date +%s)
for question in "What is 37+45?" "What is the capital of France?"; do
    curl -s -D - http://127.0.0.1:8000/v1/chat/completions -H 'content-type: application/json' \
        -d "{\"model\":\"coe\",\"messages\":[{\"role\":\"user\",\"content\":\"$question\"}]}" \
        | grep -E '^x-coe-experts|"content"' | sed -E 's/.*"content":"([^"]*)".*/answer: \1/'
done
# A later start: every model, quality record and router is cached now.
stop_service
t3=$(date +%s)
start_until_healthy serve-later.log
t4=$(date +%s)
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m)"
echo "install (scripts/setup.sh): $((t1 - t0)) s"
echo "serve run to healthy (zoo build + engine starts): $((t2 - t1)) s"
echo "total from nothing to serving: $((t2 - t0)) s"
echo "later start, everything cached (serve run to healthy): $((t4 - t3)) s"
