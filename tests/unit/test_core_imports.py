import subprocess
import sys

CORE_MODULES = [
    "router_service", "router_service.config", "router_service.schema", "router_service.errors",
    "router_service.types", "router_service.table", "router_service.embedding", "router_service.service",
    "router_service.http", "router_service.assembly", "router_service.strategies.base",
    "router_service.strategies.rules", "router_service.experts.base", "router_service.experts.fake",
    "router_service.experts.vllm_engine", "router_service.models",
]


def test_core_imports_neither_ray_nor_vllm():
    # A fresh interpreter, so modules imported by other tests cannot hide an import.
    code = (
        "import sys, importlib\n"
        f"for m in {CORE_MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm', 'torch'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported by the core: {out.stdout.strip()}"
