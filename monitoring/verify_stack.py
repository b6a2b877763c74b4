#!/usr/bin/env python3
"""Checks what `make up` started and prints one line per check (standard library only).

  Prometheus    both targets (api, worker) up; every rule group of monitoring/alerts.yaml and
                slo.yaml loaded
  Alertmanager  ready; Prometheus sees it as an active Alertmanager
  Grafana       /api/health answers; datasource uid `prometheus`; the Orion dashboard (uid orion)

Each check is polled until it holds or --timeout runs out (the first scrape and rule
evaluation come up to 15 s after start). Exit status 1 if any check failed, 2 on bad usage.
The Grafana password comes from GRAFANA_ADMIN_PASSWORD (default admin, as in compose).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

RULE_FILES = [Path(__file__).resolve().parent / name for name in ("alerts.yaml", "slo.yaml")]


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        return e.code, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def shipped_groups() -> list[str]:
    return [name for path in RULE_FILES for name in re.findall(r"^  - name: (\S+)", path.read_text(encoding="utf-8"), flags=re.M)]


def poll(check, timeout: float) -> tuple[bool, str]:
    """check() -> (ok, detail); retried until ok or timeout; connection errors count as not ok."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ok, detail = check()
        except (OSError, ValueError, KeyError, TypeError) as e:
            ok, detail = False, f"not answering ({e.__class__.__name__}: {e})"
        if ok or time.monotonic() >= deadline:
            return ok, detail
        time.sleep(1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--alertmanager", required=True)
    parser.add_argument("--grafana", help="Grafana base URL; omitted: Grafana is not checked")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    prom, am = args.prometheus.rstrip("/"), args.alertmanager.rstrip("/")
    grafana_auth = (os.environ.get("GRAFANA_ADMIN_USER", "admin"), os.environ.get("GRAFANA_ADMIN_PASSWORD", "admin"))

    def targets():
        _, doc = get(f"{prom}/api/v1/targets?state=active")
        health = {t["labels"]["job"]: t["health"] for t in doc["data"]["activeTargets"]}
        ok = health.get("api") == "up" and health.get("worker") == "up"
        return ok, ", ".join(f"{job} {h}" for job, h in sorted(health.items())) or "no targets"

    def rules():
        _, doc = get(f"{prom}/api/v1/rules")
        loaded = sorted(g["name"] for g in doc["data"]["groups"])
        want = sorted(shipped_groups())
        return loaded == want, f"{len(loaded)} of {len(want)} rule groups loaded ({', '.join(loaded) or 'none'})"

    def alertmanager_ready():
        status, _ = get(f"{am}/-/ready")
        return status == 200, f"{am}/-/ready answered {status}"

    def prometheus_sees_alertmanager():
        _, doc = get(f"{prom}/api/v1/alertmanagers")
        active = [a["url"] for a in doc["data"]["activeAlertmanagers"]]
        return bool(active), f"Prometheus sends to {', '.join(active) or 'no Alertmanager'}"

    def grafana_health():
        status, doc = get(f"{args.grafana}/api/health")
        return status == 200 and doc.get("database") == "ok", f"/api/health answered {status} {doc}"

    def grafana_datasource():
        status, doc = get(f"{args.grafana}/api/datasources/uid/prometheus", grafana_auth)
        return status == 200 and doc.get("type") == "prometheus", f"datasource uid prometheus: {status} ({doc and doc.get('url')})"

    def grafana_dashboard():
        status, doc = get(f"{args.grafana}/api/dashboards/uid/orion", grafana_auth)
        title = doc and doc.get("dashboard", {}).get("title")
        return status == 200 and bool(title), f"dashboard uid orion: {status} ({title})"

    checks = [
        ("Prometheus", "targets api and worker up", targets),
        ("Prometheus", "every rule group loaded", rules),
        ("Alertmanager", "ready", alertmanager_ready),
        ("Alertmanager", "seen by Prometheus", prometheus_sees_alertmanager),
    ]
    if args.grafana:
        args.grafana = args.grafana.rstrip("/")
        checks += [
            ("Grafana", "answers /api/health", grafana_health),
            ("Grafana", "datasource uid prometheus", grafana_datasource),
            ("Grafana", "Orion dashboard provisioned", grafana_dashboard),
        ]
    failed = 0
    deadline = time.monotonic() + args.timeout
    for service, what, check in checks:
        ok, detail = poll(check, max(0.0, deadline - time.monotonic()))
        failed += not ok
        print(f"  {'ok  ' if ok else 'FAIL'}  {service:<12} {what}: {detail}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
