"""The serving core (`router_service`) stays free of Ray, vLLM and torch.

Two checks over *every* module of the package, found by walking it (so a new module is covered
without editing this file):
- statically, no module names `ray`, `vllm` or `torch` in any import statement, lazy ones included;
- at run time, importing every module in a fresh interpreter loads none of them.
Model building (torch) lives in the top-level `zoo` package; vLLM and Ray live in `deployments/`.
"""

import ast
import pkgutil
from pathlib import Path

import router_service

from .helpers import heavy_imports_of

FORBIDDEN = ("ray", "vllm", "torch")
PACKAGE_DIR = Path(router_service.__file__).parent


def core_modules() -> list[str]:
    names = ["router_service"]
    names += [
        info.name
        for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="router_service.")
        if not info.name.endswith("__main__")
    ]
    return sorted(names)


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_walk_finds_the_core():
    modules = core_modules()
    assert len(modules) > 20 and "router_service.routing.strategies.category" in modules


def test_no_core_module_names_ray_vllm_or_torch():
    offenders = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        bad = imported_roots(path.read_text()) & set(FORBIDDEN)
        if bad:
            offenders[str(path.relative_to(PACKAGE_DIR))] = sorted(bad)
    assert offenders == {}, f"core modules importing heavy engines: {offenders}"


def test_importing_every_core_module_loads_neither_ray_vllm_nor_torch():
    bad = heavy_imports_of(f"import importlib\nfor m in {core_modules()!r}: importlib.import_module(m)", FORBIDDEN)
    assert bad == [], f"heavy modules imported by the core: {bad}"


def test_the_public_surface_resolves_and_stays_small():
    for name in router_service.__all__:
        assert getattr(router_service, name) is not None, name
    assert len(router_service.__all__) <= 25
