"""Prometheus keeps what the dashboard reads: "Error budget remaining (30 days)" reads
`increase(...[30d])`, so both stacks keep more than 30 days, on storage that survives a restart
(compose: the named volume prometheus-data; Kubernetes: the PersistentVolumeClaim
prometheus-data), with a size cap above the sized estimate and below the volume.

Sizing (monitoring_support.py): series x samples/day (86 400 / scrape interval) x bytes/sample x
retention days + WAL. The series come from the per-pod counts (held to the real binaries by
test_live.py) and, for Kubernetes, every environment's HPA maximum as rendered. What this does
not prove: Prometheus 3.13's real bytes per sample on this data, or a StorageClass's real
provisioning (kind: local-path; EKS: the preflight checks a default class exists).
"""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from monitoring_support import (
    BYTES_PER_SAMPLE,
    PROMETHEUS_YML,
    REPO,
    SERIES_PER_API_POD,
    SERIES_PER_WORKER_POD,
    SERIES_PROMETHEUS_SELF,
    SERIES_RULES,
    SIZE_CAP_MARGIN,
    WAL_AND_HEAD_BYTES,
    dashboard_panels,
    load_yaml,
)

COMPOSE = REPO / "docker-compose.yml"
K8S_PROMETHEUS = REPO / "k8s" / "monitoring" / "prometheus" / "prometheus.yaml"
K8S_PROMETHEUS_YML = REPO / "k8s" / "monitoring" / "prometheus" / "prometheus.yml"
BUDGET_PANEL = "Error budget remaining (30 days)"
DAY = 86400
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY, "y": 365 * DAY}


def seconds(duration: str) -> float:
    """A Prometheus duration (one unit) in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert m, f"not a single-unit Prometheus duration: {duration!r}"
    return int(m.group(1)) * UNITS[m.group(2)]


def size_bytes(size: str) -> int:
    """--storage.tsdb.retention.size: "Based on powers-of-2, so 1KB is 1024B" (docs/storage.md)."""
    m = re.fullmatch(r"(\d+)(B|KB|MB|GB|TB)", size)
    assert m, f"unexpected retention size {size!r}"
    return int(m.group(1)) * 1024 ** ["B", "KB", "MB", "GB", "TB"].index(m.group(2))


def quantity_bytes(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", q)
    assert m, f"unexpected quantity {q!r}"
    return int(m.group(1)) * 1024 ** (["Mi", "Gi", "Ti"].index(m.group(2)) + 2)


def flags(args: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)


def budget_window() -> float:
    (panel,) = [p for p in dashboard_panels() if p["title"] == BUDGET_PANEL]
    windows = {w for t in panel["targets"] for w in re.findall(r"\[([^\]]+)\]", t["expr"])}
    assert len(windows) == 1, windows
    window = seconds(windows.pop())
    title_days = int(re.search(r"\((\d+) days\)", BUDGET_PANEL).group(1))
    assert window == title_days * DAY, "the title says what the query reads"
    return window


def scrape_interval(path) -> float:
    return seconds(load_yaml(path)["global"]["scrape_interval"])


def estimate(series: int, interval: float, retention: float) -> float:
    return series * (DAY / interval) * BYTES_PER_SAMPLE * (retention / DAY) + WAL_AND_HEAD_BYTES


def compose_prometheus() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]


def k8s_prometheus() -> tuple[dict, dict]:
    docs = [d for d in yaml.safe_load_all(K8S_PROMETHEUS.read_text()) if d]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    return dep, pvcs


def hpa_maxima() -> dict[str, int]:
    """maxReplicas of the api HPA per environment, as the overlays render it."""
    kubectl = REPO / ".venv" / "bin" / "kubectl"
    out = {}
    for env in ("dev", "uat", "prod"):
        res = subprocess.run([str(kubectl), "kustomize", str(REPO / "k8s" / "overlays" / env)],
                             capture_output=True, text=True, check=True)
        (hpa,) = [d for d in yaml.safe_load_all(res.stdout) if d and d["kind"] == "HorizontalPodAutoscaler"]
        out[env] = hpa["spec"]["maxReplicas"]
    return out


def test_compose_keeps_more_than_the_window_on_its_volume():
    svc = compose_prometheus()
    f = flags(svc["command"])
    retention = seconds(f["--storage.tsdb.retention.time"])
    # A day more than the window: blocks go only when wholly expired, and a 30-day range needs
    # a sample from before its start to count the first increase.
    assert retention >= budget_window() + DAY, f["--storage.tsdb.retention.time"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
    volume = mounts[f["--storage.tsdb.path"]]
    assert volume in (yaml.safe_load(COMPOSE.read_text()).get("volumes") or {}), "the TSDB is on a named volume"
    # compose's Prometheus scrapes the api and the worker, not itself.
    assert [j["job_name"] for j in load_yaml(PROMETHEUS_YML)["scrape_configs"]] == ["api", "worker"]
    series = SERIES_PER_API_POD + SERIES_PER_WORKER_POD + SERIES_RULES
    need = estimate(series, scrape_interval(PROMETHEUS_YML), retention)
    assert size_bytes(f["--storage.tsdb.retention.size"]) >= SIZE_CAP_MARGIN * need, need


def test_kubernetes_keeps_more_than_the_window_on_a_claim_sized_for_it():
    dep, pvcs = k8s_prometheus()
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    f = flags(c["args"])
    retention = seconds(f["--storage.tsdb.retention.time"])
    assert retention >= budget_window() + DAY, f["--storage.tsdb.retention.time"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == f["--storage.tsdb.path"])
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume, "an emptyDir loses the history with the pod"
    pvc = pvcs[volume["persistentVolumeClaim"]["claimName"]]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and dep["spec"]["strategy"]["type"] == "Recreate"
    cap = size_bytes(f["--storage.tsdb.retention.size"])
    # Prometheus's docs/storage.md: the size cap at most 80-85 % of the disk (WAL and head
    # chunks count, and deletion lags).
    assert cap <= 0.85 * quantity_bytes(pvc["spec"]["resources"]["requests"]["storage"])
    assert "prometheus" in [j["job_name"] for j in load_yaml(K8S_PROMETHEUS_YML)["scrape_configs"]]
    maxima = hpa_maxima()
    series = (sum(maxima.values()) * SERIES_PER_API_POD + len(maxima) * SERIES_PER_WORKER_POD
              + SERIES_PROMETHEUS_SELF + SERIES_RULES)
    need = estimate(series, scrape_interval(K8S_PROMETHEUS_YML), retention)
    assert cap >= SIZE_CAP_MARGIN * need, (maxima, series, need, cap)


@pytest.mark.parametrize("path", [COMPOSE, K8S_PROMETHEUS])
def test_the_sizing_comment_states_the_same_retention(path):
    """The arithmetic in the file's comment matches its flags (a stale comment fails here)."""
    text = path.read_text()
    m = re.search(r"--storage\.tsdb\.retention\.time=(\d+)d", text)
    assert m and f"x {m.group(1)} days" in text, "the sizing comment's day count differs from the flag"
