"""deployments/grafana/coe-router.json queries only what the router exports, under the names Prometheus
sees: Ray prefixes application metrics with `ray_`, counters keep their `_total` name, and histograms
are read through `_bucket`/`_sum`/`_count`. The metrics are read from deployments/metrics.py's source,
so this test needs no Ray."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deployments" / "grafana" / "coe-router.json"
METRICS_SOURCE = ROOT / "deployments" / "metrics.py"
RAY_PREFIX = "ray_"
SERVE_LABELS = {"application", "deployment", "replica", "route"}  # added by ray.serve.metrics in a replica
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def registered_metrics() -> dict[str, tuple[str, set[str]]]:
    """{name: (kind, tag keys)} for every `serve_metrics.Counter/Histogram/Gauge(...)` call."""
    found = {}
    for node in ast.walk(ast.parse(METRICS_SOURCE.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "serve_metrics"):
            continue
        name = ast.literal_eval(node.args[0])
        tags = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "tag_keys"), ())
        found[name] = (node.func.attr, set(tags))
    return found


def exported_names() -> dict[str, tuple[str, set[str]]]:
    """What Prometheus scrapes: {exported series name: (source metric name, labels it may carry)}."""
    out = {}
    for name, (kind, tags) in registered_metrics().items():
        labels = tags | SERVE_LABELS
        if kind == "Histogram":
            for suffix in HISTOGRAM_SUFFIXES:
                out[RAY_PREFIX + name + suffix] = (name, labels | ({"le"} if suffix == "_bucket" else set()))
        else:
            out[RAY_PREFIX + name] = (name, labels)
    return out


def panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def targets() -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in panels() for t in p["targets"]]


def selector_metrics(expr: str) -> list[str]:
    return re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{", expr)


def used_labels(expr: str, legend: str) -> set[str]:
    labels = set()
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    for selector in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    labels |= set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))
    return labels


def test_the_metrics_source_is_parsed():
    metrics = registered_metrics()
    assert metrics["coe_requests_total"] == ("Counter", {"expert", "status"})
    assert metrics["coe_request_latency_seconds"] == ("Histogram", {"strategy"})
    assert len(metrics) == 10


def test_counters_already_end_in_total():
    # Prometheus exposes a counter as <name>_total: a counter named without it would be exported under
    # a name this dashboard (and this test's mapping) does not use.
    for name, (kind, _) in registered_metrics().items():
        if kind == "Counter":
            assert name.endswith("_total"), name


def test_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] == "coe-router"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)) >= 9
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize("title, target", targets(), ids=[f"{t}:{x['refId']}" for t, x in targets()])
def test_every_query_uses_exported_names_and_their_labels(title, target):
    exported = exported_names()
    expr = target["expr"]
    metrics = selector_metrics(expr)
    assert metrics, f"{title}: no metric selector in {expr!r}"
    unknown = [m for m in metrics if m not in exported]
    assert not unknown, f"{title}: {unknown} are not exported (known: {sorted(exported)})"
    # Any other coe_ name (e.g. one written without a selector) must be exported too.
    assert {m for m in re.findall(r"[A-Za-z_:]*coe_[A-Za-z0-9_:]*", expr)} <= set(exported), expr
    if "histogram_quantile" in expr:
        assert all(m.endswith("_bucket") for m in metrics) and re.search(r"\bby\s*\([^)]*\ble\b", expr), expr
    allowed = set().union(*(exported[m][1] for m in metrics))
    assert used_labels(expr, target.get("legendFormat", "")) <= allowed, f"{title}: {expr}"


def test_every_router_metric_has_a_panel():
    queried = {exported_names()[m][0] for _, t in targets() for m in selector_metrics(t["expr"])}
    assert queried == set(registered_metrics())
