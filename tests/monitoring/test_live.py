"""Live check: the real orion-api and orion-worker, scraped by Debian's real Prometheus.

Prometheus runs on monitoring/prometheus.yml with only the target addresses, the intervals
(1 s instead of 15 s, so the test takes seconds) and the rule file path rewritten; the rule
files are the shipped monitoring/alerts.yaml and slo.yaml themselves. Everything listens on 127.0.0.1 on free
ports and every request goes to 127.0.0.1.

Binaries: $ORION_BIN_DIR (default dist/amd64, the shipped binaries that `make build` lays out
and `make test-monitoring` builds first). A missing binary or prometheus is a failure, not a skip.

The tests run in file order and share one stack (module-scoped fixture):
 1. both targets up, with the labels the rules aggregate by;
 2. every rule group of alerts.yaml and slo.yaml loaded, every rule evaluated with health "ok";
 3. after some traffic, every dashboard query evaluates without error and the key ones
    return data;
 4. each target has no more series than Prometheus's storage was sized for;
 5. a healthy stack has no pending or firing alert but Watchdog (always firing by design);
 6. a worker whose every run fails (JOB_FAILURE_RATE=1): WorkerJobFailureRate goes
    pending/firing; restarted three times, WorkerCrashLooping{cause="restarts"} does too;
 7. the API stopped: APIDown{cause="target-down"} goes pending.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from monitoring_support import (
    RULE_FILES,
    PROMETHEUS_YML,
    REPO,
    SERIES_PER_API_POD,
    SERIES_PER_WORKER_POD,
    alert_rules,
    dashboard_queries,
    load_yaml,
    rule_groups,
    substitute_grafana_variables,
    tool,
)

BIN_DIR = Path(os.environ.get("ORION_BIN_DIR", REPO / "dist" / "amd64"))
HOST = "127.0.0.1"

# Panels whose queries must return data once the stack has served traffic and the worker has
# run once (RUN_ON_START). The others (panics, connections closed, job duration p95, ...)
# legitimately stay empty on a quiet, healthy stack; they must still evaluate without error.
KEY_PANELS = {
    "Targets up",
    "Firing alerts",
    "Build",
    "Request rate by route and status",
    "5xx ratio",
    "Latency p50 / p95 / p99",
    "Open connections",
    "Job runs",
    "Time since last success",
    "Next run",
    "Resident memory",
}

# Generous bounds: they are part of the test's contract, not measurements.
STARTUP_TIMEOUT = 30
ALERT_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    """Polls check() until it returns a truthy value; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError, ValueError) as e:  # not listening yet
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class Service:
    """One child process with its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Stack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.api_port = free_port()
        self.worker_port = free_port()
        self.prom_port = free_port()
        self.services: list[Service] = []
        self.api: Service | None = None
        self.worker: Service | None = None
        self.prometheus: Service | None = None
        self.alertmanager_address: str | None = None

    # ---------------------------------------------------------------- processes
    def _binary(self, name: str) -> str:
        path = BIN_DIR / name
        assert path.is_file() and os.access(path, os.X_OK), (
            f"{path} is missing: build it with `make build` or point ORION_BIN_DIR at it"
        )
        return str(path)

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        service = Service(name, argv, {**base, **env}, self.tmp)
        self.services.append(service)
        return service

    def start_api(self):
        self.api = self._start(
            "api",
            [self._binary("orion-api")],
            {"PORT": str(self.api_port), "NODE_ENV": "development", "LOG_LEVEL": "warn"},
        )
        wait_for("orion-api /health", lambda: self._healthy(self.api, self.api_port), STARTUP_TIMEOUT)

    def start_worker(self, failure_rate: str = "0"):
        self.worker = self._start(
            "worker",
            [self._binary("orion-worker")],
            {
                "METRICS_PORT": str(self.worker_port),
                "NODE_ENV": "development",
                "LOG_LEVEL": "warn",
                "CRON_SCHEDULE": "* * * * *",
                "TZ": "UTC",
                "RUN_ON_START": "true",
                "JOB_DURATION_MS": "20",
                "JOB_FAILURE_RATE": failure_rate,
            },
        )
        wait_for("orion-worker /health", lambda: self._healthy(self.worker, self.worker_port), STARTUP_TIMEOUT)

    def _healthy(self, service: Service, port: int) -> bool:
        assert service.alive(), f"{service.name} exited with {service.proc.returncode}:\n{service.output()}"
        return http_get(f"http://{HOST}:{port}/health", timeout=2)[0] == 200

    def prometheus_config(self) -> dict:
        """The shipped compose config with targets, intervals and rule path rewritten."""
        config = load_yaml(PROMETHEUS_YML)
        config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
        assert config["rule_files"] == list(RULE_FILES)
        config["rule_files"] = [str(path) for path in RULE_FILES.values()]
        ports = {"api": self.api_port, "worker": self.worker_port}
        for scrape in config["scrape_configs"]:
            (static,) = scrape["static_configs"]
            assert static["labels"] == {"namespace": "local"}, scrape["job_name"]
            static["targets"] = [f"{HOST}:{ports[scrape['job_name']]}"]
        assert {s["job_name"] for s in config["scrape_configs"]} == set(ports)
        # Compose's Alertmanager address, replaced by this stack's (none here: test_delivery.py
        # runs one).
        (alertmanagers,) = config.pop("alerting")["alertmanagers"]
        assert alertmanagers == {"static_configs": [{"targets": ["alertmanager:9093"]}]}
        if self.alertmanager_address:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager_address]}]}]}
        return config

    def start_prometheus(self, *extra_flags: str):
        config_path = self.tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.prometheus_config()))
        self.prometheus = self._start(
            "prometheus",
            [
                tool("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.tmp / 'tsdb'}",
                f"--web.listen-address={HOST}:{self.prom_port}",
                "--log.level=warn",
                *extra_flags,
            ],
            {},
        )

        def ready():
            assert self.prometheus.alive(), f"prometheus exited:\n{self.prometheus.output()}"
            return http_get(f"http://{HOST}:{self.prom_port}/-/ready", timeout=2)[0] == 200

        wait_for("prometheus /-/ready", ready, STARTUP_TIMEOUT)

    def stop_all(self):
        for service in reversed(self.services):
            service.stop(timeout=10)

    # ---------------------------------------------------------------- Prometheus API
    def api_get(self, path: str, **params) -> dict:
        url = f"http://{HOST}:{self.prom_port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url, timeout=10)
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", f"{url}: {status} {doc}"
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api_get("query", query=expr)
        assert data["resultType"] in {"vector", "scalar"}, data
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def alerts(self, name: str | None = None, states=("pending", "firing")) -> list[dict]:
        return [
            a
            for a in self.api_get("alerts")["alerts"]
            if a["state"] in states and (name is None or a["labels"]["alertname"] == name)
        ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("monitoring-live"))
    try:
        s.start_api()
        s.start_worker()
        s.start_prometheus()
        yield s
    finally:
        s.stop_all()


def drive_traffic(stack: Stack):
    base = f"http://{HOST}:{stack.api_port}"
    codes = []
    for _ in range(100):
        codes.append(http_get(f"{base}/")[0])
    for _ in range(20):
        codes.append(http_get(f"{base}/health")[0])
        codes.append(http_get(f"{base}/ready")[0])
        codes.append(http_get(f"{base}/no/such/path")[0])
        codes.append(http_get(f"{base}/", method="HEAD")[0])
    for _ in range(5):
        codes.append(http_get(f"{base}/health", method="POST")[0])
    assert codes.count(200) == 100 + 20 * 3 and codes.count(404) == 20 and codes.count(405) == 5, sorted(set(codes))


# -------------------------------------------------------------------------------- tests
def wait_targets_up(stack: Stack) -> list[dict]:
    def both_up():
        targets = stack.api_get("targets", state="active")["activeTargets"]
        return len(targets) == 2 and all(t["health"] == "up" for t in targets) and targets

    return wait_for("both targets up", both_up, STARTUP_TIMEOUT)


def assert_rendered(alert: dict):
    """Prometheus renders annotation templates itself; a broken template shows in the text."""
    for key in ("summary", "description", "runbook_url"):
        text = alert["annotations"][key]
        assert text and "<no value>" not in text and "error" not in text.lower(), (key, text)


def test_targets_up_with_rule_labels(stack):
    targets = wait_targets_up(stack)
    assert {t["labels"]["job"] for t in targets} == {"api", "worker"}
    assert all(t["labels"]["namespace"] == "local" for t in targets)
    for job in ("api", "worker"):
        (sample,) = stack.query(f'up{{job="{job}", namespace="local"}}')
        assert sample["value"][1] == "1"


def test_every_rule_loaded_and_healthy(stack):
    shipped = rule_groups()

    def all_evaluated():
        groups = stack.api_get("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return groups if rules and all(r["health"] != "unknown" for r in rules) else None

    groups = wait_for("every rule evaluated", all_evaluated, STARTUP_TIMEOUT)
    # Prometheus lists the groups file by file, each file's by name: compare by name.
    shipped = sorted(shipped, key=lambda g: g["name"])
    groups = sorted(groups, key=lambda g: g["name"])
    assert [g["name"] for g in groups] == [g["name"] for g in shipped]
    for loaded, source in zip(groups, shipped):
        assert len(loaded["rules"]) == len(source["rules"]), loaded["name"]
        for rule in loaded["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            assert not rule.get("lastError"), rule["name"]
    loaded_alerts = sorted(r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting")
    assert loaded_alerts == sorted(r["alert"] for r in alert_rules())


def test_every_dashboard_query_evaluates(stack):
    # Two rounds of traffic: the first creates the series (a counter's first sample shows no
    # increase), the second, after Prometheus has scraped the first, is what rate() sees.
    drive_traffic(stack)
    wait_for(
        "the first round of traffic to be scraped",
        lambda: any(
            float(s["value"][1]) >= 100
            for s in stack.query('sum(http_requests_total{job="api", route="/", method="GET", status_code="200"})')
        ),
        STARTUP_TIMEOUT,
    )
    drive_traffic(stack)
    # The namespace variable's query: Grafana asks for the label values of its selector.
    namespaces = stack.api_get("label/namespace/values", **{"match[]": 'up{job=~"api|worker"}'})
    assert namespaces == ["local"]

    queries = dashboard_queries()
    titles = {title for title, _ in queries}
    assert KEY_PANELS <= titles, f"key panels missing from the dashboard: {KEY_PANELS - titles}"

    def key_panels_without_data():
        """Evaluates every query (an error fails at once); returns the key ones still empty."""
        empty = []
        for title, expr in queries:
            result = stack.query(substitute_grafana_variables(expr, namespace="local", rate_interval="1m"))
            values = [float(s["value"][1]) for s in result]
            if title in KEY_PANELS and (not values or not all(math.isfinite(v) for v in values)):
                empty.append(f"{title}: {expr} -> {result}")
        return empty

    # rate() needs two samples of the series the traffic created: poll until they are there.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while (empty := key_panels_without_data()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not empty, "key panels without data:\n" + "\n".join(empty)

    # Spot-check the meaning of two of them.
    (ratio,) = stack.query(
        substitute_grafana_variables(next(e for t, e in queries if t == "5xx ratio"))
    )
    assert float(ratio["value"][1]) == 0.0  # no 5xx was served
    up = stack.query(substitute_grafana_variables(next(e for t, e in queries if t == "Targets up")))
    assert sorted(s["metric"]["job"] for s in up) == ["api", "worker"]


def test_each_target_has_no_more_series_than_the_storage_was_sized_for(stack):
    """Prometheus's retention and volumes are sized from per-pod series counts
    (monitoring_support.py, test_retention.py); after the traffic above, what the real
    binaries gave Prometheus, scrape series included, stays within them."""
    for job, budget in (("api", SERIES_PER_API_POD), ("worker", SERIES_PER_WORKER_POD)):
        (sample,) = stack.query(f'count({{job="{job}", namespace="local"}})')
        series = int(float(sample["value"][1]))
        assert 20 < series <= budget, (job, series, budget)


def test_healthy_stack_raises_no_alert(stack):
    # A few evaluations (1 s apart) after both targets are up, nothing may be pending or firing:
    # not the absent()/vanished rules, not WorkerStale on a fresh worker.
    wait_targets_up(stack)
    time.sleep(5)
    # Only the dead man's switch, which fires always by design.
    assert [a["labels"]["alertname"] for a in stack.alerts()] == ["Watchdog"]


def test_failing_worker_raises_failure_alerts(stack):
    stack.worker.stop()
    stack.start_worker(failure_rate="1")  # every run fails; RUN_ON_START fails at once

    (alert,) = wait_for(
        "WorkerJobFailureRate to go pending or firing", lambda: stack.alerts("WorkerJobFailureRate"), ALERT_TIMEOUT
    )
    assert alert["labels"]["namespace"] == "local" and alert["labels"]["severity"] == "warning"
    assert_rendered(alert)

    # Three more restarts, each seen by Prometheus (a new process_start_time_seconds), make a
    # crash loop that the failure counter alone (1, 1, 1, ...) would never reveal.
    for restart in range(3):
        before = {s["value"][1] for s in stack.query('process_start_time_seconds{job="worker"}')}
        # process_start_time_seconds has whole-second resolution: starts less than a second
        # apart would look like one process (a real crash loop backs off 10 s and more).
        time.sleep(max(0.0, 1.2 - (time.monotonic() - stack.worker.started)))
        stack.worker.stop()
        stack.start_worker(failure_rate="1")
        wait_for(
            f"restart {restart + 1} to be scraped",
            lambda: any(s["value"][1] not in before for s in stack.query('process_start_time_seconds{job="worker", namespace="local"}')),
            STARTUP_TIMEOUT,
        )

    def crash_loop_alert():
        return [a for a in stack.alerts("WorkerCrashLooping") if a["labels"].get("cause") == "restarts"]

    (alert,) = wait_for("WorkerCrashLooping{cause=restarts}", crash_loop_alert, ALERT_TIMEOUT)
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["namespace"] == "local"
    assert "restarted" in alert["annotations"]["summary"]
    assert_rendered(alert)


def test_stopped_api_raises_api_down(stack):
    stack.api.stop()

    def api_down():
        return [a for a in stack.alerts("APIDown") if a["labels"].get("cause") == "target-down"]

    (alert,) = wait_for("APIDown{cause=target-down} to go pending", api_down, ALERT_TIMEOUT)
    assert alert["state"] in {"pending", "firing"}
    assert alert["labels"]["instance"] == f"{HOST}:{stack.api_port}"
    assert alert["annotations"]["runbook_url"].endswith("#apidown")
    assert_rendered(alert)
