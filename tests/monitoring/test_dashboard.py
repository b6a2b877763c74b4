"""Static checks of the Grafana provisioning and the dashboard JSON.

The live test (test_live.py) evaluates every query against a real Prometheus; these checks
need no running service: structure, datasource references, variables, and that every query
parses as PromQL (through `promtool check rules`).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import yaml

from monitoring_support import (
    SLO,
    DASHBOARD_PROVIDER,
    DATASOURCE,
    DATASOURCE_REF,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    load_yaml,
    run,
    substitute_grafana_variables,
    tool,
)

# What issue 6 asks the dashboard to show, as the metric each panel must read.
REQUIRED_METRICS = {
    "http_requests_total",  # request rate by route and status, 5xx ratio
    "http_request_duration_seconds_bucket",  # p50/p95/p99
    "http_connections_open",
    "worker_jobs_success_total",
    "worker_jobs_failure_total",
    "worker_job_duration_seconds_bucket",
    "worker_last_success_timestamp_seconds",
    "worker_next_run_timestamp_seconds",
    "up",
}


def test_datasource_provisioning():
    doc = load_yaml(DATASOURCE)
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["uid"] == DATASOURCE_REF["uid"]
    assert ds["type"] == DATASOURCE_REF["type"]
    assert ds["url"] == "http://prometheus:9090"
    assert ds["access"] == "proxy"


def test_dashboard_provider():
    doc = load_yaml(DASHBOARD_PROVIDER)
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    # docker-compose.yml and k8s/monitoring/grafana/grafana.yaml mount the dashboards here.
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_identity_and_layout():
    d = dashboard()
    assert d["uid"] == "orion" and d["title"]
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    # No two panels overlap.
    cells = Counter()
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                cells[(x, y)] += 1
    assert max(cells.values()) == 1, "panels overlap"


def test_every_panel_uses_the_provisioned_datasource():
    for p in dashboard_panels():
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE_REF, p["title"]
        assert p["targets"], f"{p['title']}: no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE_REF, p["title"]
            assert t["expr"].strip(), p["title"]


def test_namespace_variable():
    (var,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "namespace"]
    assert var["type"] == "query"
    assert var["datasource"] == DATASOURCE_REF
    assert "label_values(" in var["definition"] and "namespace" in var["definition"]
    assert var["multi"] and var["includeAll"] and var["allValue"] == ".*"


@pytest.mark.parametrize("title,expr", dashboard_queries(), ids=[t for t, _ in dashboard_queries()])
def test_query_conventions(title, expr):
    # Every range over a counter or histogram uses Grafana's $__rate_interval, except the SLO's
    # own 30-day window in the error-budget panel.
    allowed = {"$__rate_interval"} | ({SLO_PERIOD} if title == BUDGET_PANEL else set())
    for window in re.findall(r"\[([^\]]+)\]", expr):
        assert window in allowed, f"{title}: range [{window}] instead of [$__rate_interval]"
    # Every selector is scoped to the chosen namespaces.
    for selector in re.findall(r"\b[a-zA-Z_:][\w:]*\{[^}]*\}", expr):
        assert 'namespace=~"$namespace"' in selector, f"{title}: {selector} ignores $namespace"
    assert re.search(r"\b[a-zA-Z_:][\w:]*\{", expr), f"{title}: no label selector"


BUDGET_PANEL = "Error budget remaining (30 days)"
BURN_PANEL = "Error budget burn rate"
SLO_PERIOD = "30d"
SLO_OBJECTIVE = "orion:api_availability_slo:objective"


def test_slo_panels_read_the_one_objective_and_every_burn_window():
    """Budget and burn rates per namespace, from the objective and the recording rules of
    monitoring/slo.yaml (none restated here)."""
    queries = dict(dashboard_queries()[::-1])  # first query of each panel
    budget = queries[BUDGET_PANEL]
    assert SLO_OBJECTIVE in budget and "sum by (namespace)" in budget and f"[{SLO_PERIOD}]" in budget
    burn = [expr for title, expr in dashboard_queries() if title == BURN_PANEL]
    records = {r["record"] for g in load_yaml(SLO)["groups"] for r in g["rules"] if "record" in r}
    windows = {r.rsplit("ratio_rate", 1)[1] for r in records if ":ratio_rate" in r}
    assert windows == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    used = {m for expr in burn for m in re.findall(r"slo_errors_per_request:ratio_rate(\w+)\{", expr)}
    assert used == windows
    assert all(SLO_OBJECTIVE in expr for expr in burn)
    for expr in burn:
        (name,) = re.findall(r"(namespace_job:\w+:ratio_rate\w+)\{", expr)
        assert name in records, f"{name} is not a recording rule of slo.yaml"


def test_required_metrics_are_on_the_dashboard():
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for metric in REQUIRED_METRICS:
        assert re.search(rf"\b{metric}\{{", exprs), f"no panel reads {metric}"
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le" in exprs, f"no p{q} latency panel summed by le"


def test_every_query_parses_as_promql(tmp_path):
    """promtool parses each query (with Grafana's variables substituted) as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([tool("promtool"), "check", "rules", "--lint=none", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
