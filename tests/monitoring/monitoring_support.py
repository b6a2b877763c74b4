"""Shared helpers for the monitoring tests: paths, the shipped files, the docs' sections and anchors.

Every test reads the files that ship (monitoring/alerts.yaml, the dashboard JSON, docs/*.md):
nothing here keeps a copy of an alert name or a query.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# The one reader of the repository's Markdown (GitHub's anchors, section markers), shared by the suites.
sys.path.insert(0, str(REPO / "tests" / "docs"))
import doctext  # noqa: E402

MONITORING = REPO / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
SLO = MONITORING / "slo.yaml"
# Every rule file that ships, as compose mounts it (container path -> file of the repository).
RULE_FILES = {"/etc/prometheus/alerts.yaml": ALERTS, "/etc/prometheus/slo.yaml": SLO}
ALERT_TESTS = [
    MONITORING / "alerts.test.yaml",
    MONITORING / "alerts.daily.test.yaml",
    MONITORING / "alerts.slo.test.yaml",
    MONITORING / "alerts.slo-slow.test.yaml",
]
ALERTMANAGER_YML = MONITORING / "alertmanager.yml"
ROUTES_TEST = MONITORING / "alertmanager.routes.test.yaml"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "orion.json"
DATASOURCE = MONITORING / "grafana" / "provisioning" / "datasources" / "datasource.yaml"
DASHBOARD_PROVIDER = MONITORING / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
# The runbooks: every alert's runbook_url is this page on the default branch, plus a heading's anchor.
RUNBOOKS = REPO / "docs" / "operating.md"
RUNBOOK_PREFIX = "https://github.com/OrionLynn19/orionPL/blob/main/docs/operating.md#"
DATASOURCE_REF = {"type": "prometheus", "uid": "prometheus"}


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def rule_groups() -> list[dict]:
    """Every rule group of the shipped rule files (alerts.yaml, slo.yaml), in file order."""
    return [group for path in RULE_FILES.values() for group in load_yaml(path)["groups"]]


def alert_rules() -> list[dict]:
    """Every alerting rule of the shipped rule files, with its group name added."""
    rules = []
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                rules.append({**rule, "_group": group["name"]})
    return rules


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_panels() -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query target of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def substitute_grafana_variables(expr: str, namespace: str = "local", rate_interval: str = "1m") -> str:
    """What Grafana sends to Prometheus for one selected namespace."""
    replacements = {
        "$__rate_interval": rate_interval,
        "$__interval": "15s",
        "$__range": "1h",
        "${namespace}": namespace,
        "$namespace": namespace,
    }
    for key, value in replacements.items():
        expr = expr.replace(key, value)
    assert "$" not in expr, f"unsubstituted variable left in {expr!r}"
    return expr


github_slug = doctext.github_slug


def doc_section(name: str) -> str:
    """The `<!-- section:NAME -->` block of the docs, wherever a page keeps it."""
    return doctext.section_text(name)


def runbook_anchors() -> set[str]:
    """Anchors of every heading of the runbook page (GitHub's slugs, duplicates suffixed)."""
    return doctext.anchors(RUNBOOKS)


def tool(name: str) -> str:
    """Path of a required command-line tool; a missing tool is a failure, never a skip."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    assert path, f"{name} is not installed: run `make deps` (Debian package prometheus)"
    return path


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)


# ------------------------------------------------------------------ Prometheus storage sizing
# The arithmetic docker-compose.yml and k8s/monitoring/prometheus/prometheus.yaml state in their
# comments: series x samples/day x bytes/sample x days of retention, plus the WAL and head chunks.
# tests/monitoring/test_retention.py holds the shipped retention flags and volumes to it;
# test_live.py holds the per-pod series counts to what the real binaries expose.
#
# An api pod exposes 22 series of its own plus 16 (counter, 13 buckets, sum, count) per
# (method, route, status_code) it has answered; ordinary traffic answers ~20 such combinations
# (the live test's traffic: 7). Prometheus adds 5 series per target (up, scrape_*).
SERIES_PER_API_POD = 350
SERIES_PER_WORKER_POD = 55
# Prometheus's own metrics (job prometheus, Kubernetes only): Debian's 2.42 exposes ~340; 3.5,
# which ships, more (not measurable here): budgeted generously.
SERIES_PROMETHEUS_SELF = 1500
# Recording rules and ALERTS series: slo.yaml records ~13 series per namespace and job.
SERIES_RULES = 200
# docs/storage.md of Prometheus v3.5.0: "Prometheus stores an average of only 1-2 bytes per
# sample"; the upper end.
BYTES_PER_SAMPLE = 2
# The WAL keeps at least three 128 MB segments and peaks with the head every 2 hours.
WAL_AND_HEAD_BYTES = 500 * 10**6
# The margin the size cap keeps over the estimate before it starts dropping history.
SIZE_CAP_MARGIN = 1.4
