"""End to end: alerts reach the right receiver, through real Prometheus and Alertmanager processes.

Everything runs on 127.0.0.1 on free ports:
- the real orion-api twice (scraped as namespace orion-prod and as orion-uat: the namespace is a
  scrape-config label, as in compose) and the real orion-worker (orion-uat, every run failing);
- Debian's prometheus on monitoring/prometheus.yml with the targets, the Alertmanager address and
  1 s intervals replaced, loading monitoring/alerts.yaml and slo.yaml with every `for:` divided by 30
  (1m -> 2s) and nothing else changed;
- Debian's prometheus-alertmanager 0.25 on monitoring/alertmanager.yml with only each receiver's
  endpoint replaced by a webhook this test serves (/oncall-page, /team-chat, /heartbeat; their
  send_resolved kept) and group_wait / group_interval set to 1 s. Routes, matchers, repeat
  intervals and inhibition rules are the shipped ones.

What it proves: Watchdog reaches heartbeat only; stopping the prod API pages oncall-page (and
team-chat) with APIDown once, with summary and runbook_url; an APIHighErrorRate in orion-prod is
inhibited while APIDown fires there, and the same alert in orion-uat is not (and reaches
team-chat only, critical or not); the uat worker's WorkerJobFailureRate reaches team-chat only;
starting the API again sends the resolved notification. APIHighErrorRate cannot be provoked from
the real API (it has no route that fails), so it is posted to Alertmanager's API with the labels
the shipped rule sets. What it does not prove: PagerDuty's and Slack's own APIs (their
integrations are replaced by webhooks).
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from monitoring_support import ALERTMANAGER_YML, RULE_FILES, alert_rules, load_yaml, tool
from test_live import HOST, STARTUP_TIMEOUT, Service, free_port, http_get, wait_for

import test_live

RECEIVERS = ("oncall-page", "team-chat", "heartbeat")
# `for:` in the test's copy of the rules: the shipped value divided by this.
FOR_DIVISOR = 30
DELIVERY_TIMEOUT = 30


def parse_duration(text: str) -> int:
    """Prometheus duration (as used in the rules: 1m, 2m, 10m, 30s, 1h) in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0
    for number, unit in re.findall(r"(\d+)([smhd])", text):
        total += int(number) * units[unit]
    assert total and re.fullmatch(r"(\d+[smhd])+", text), text
    return total


def derived_rules(path: Path) -> dict:
    """A shipped rule file with every `for:` shortened; asserts nothing else differs."""
    shipped = load_yaml(path)
    rules = load_yaml(path)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{max(1, parse_duration(rule['for']) // FOR_DIVISOR)}s"
    for a, b in zip(shipped["groups"], rules["groups"]):
        for ra, rb in zip(a["rules"], b["rules"]):
            assert {k: v for k, v in ra.items() if k != "for"} == {k: v for k, v in rb.items() if k != "for"}
    return rules


def derived_alertmanager_config(webhook: str) -> dict:
    """monitoring/alertmanager.yml with receiver endpoints and group_wait/interval replaced."""
    config = load_yaml(ALERTMANAGER_YML)
    for receiver in config["receivers"]:
        integrations = [k for k in receiver if k.endswith("_configs")]
        assert len(integrations) == 1, receiver["name"]
        (shipped,) = receiver.pop(integrations[0])
        receiver["webhook_configs"] = [
            {"url": f"{webhook}/{receiver['name']}", "send_resolved": shipped["send_resolved"]}
        ]

    def retime(route: dict):
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            retime(child)

    retime(config["route"])
    return config


class Webhook:
    """Collects every notification Alertmanager posts, by path (= receiver name)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.received.append((self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self, receiver: str | None = None, **group) -> list[dict]:
        """Notifications (optionally of one receiver) whose groupLabels include `group`."""
        with self.lock:
            items = list(self.received)
        return [
            body
            for path, body in items
            if (receiver is None or path == receiver)
            and all(body["groupLabels"].get(k) == v for k, v in group.items())
        ]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class DeliveryStack(test_live.Stack):
    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.uat_api_port = free_port()
        self.am_port = free_port()
        self.webhook = Webhook()
        self.alertmanager_address = f"{HOST}:{self.am_port}"
        self.alertmanager: Service | None = None
        self.uat_api: Service | None = None

    def start_uat_api(self):
        self.uat_api = self._start(
            "api-uat",
            [self._binary("orion-api")],
            {"PORT": str(self.uat_api_port), "NODE_ENV": "development", "LOG_LEVEL": "warn"},
        )
        wait_for("uat orion-api /health", lambda: self._healthy(self.uat_api, self.uat_api_port), STARTUP_TIMEOUT)

    def start_alertmanager(self):
        path = self.tmp / "alertmanager.yml"
        path.write_text(yaml.safe_dump(derived_alertmanager_config(self.webhook.url)))
        self.alertmanager = self._start(
            "alertmanager",
            [
                tool("prometheus-alertmanager"),
                f"--config.file={path}",
                f"--storage.path={self.tmp / 'alertmanager-data'}",
                f"--web.listen-address={HOST}:{self.am_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            {},
        )

        def ready():
            assert self.alertmanager.alive(), f"alertmanager exited:\n{self.alertmanager.output()}"
            return http_get(f"http://{HOST}:{self.am_port}/-/ready", timeout=2)[0] == 200

        wait_for("alertmanager /-/ready", ready, STARTUP_TIMEOUT)

    def prometheus_config(self) -> dict:
        config = super().prometheus_config()
        config["rule_files"] = []
        for shipped in RULE_FILES.values():
            rules_path = self.tmp / shipped.name
            rules_path.write_text(yaml.safe_dump(derived_rules(shipped), sort_keys=False))
            config["rule_files"].append(str(rules_path))
        # prod and uat: the namespace comes from the scrape config, as compose's `local` does.
        for scrape in config["scrape_configs"]:
            (static,) = scrape["static_configs"]
            if scrape["job_name"] == "api":
                scrape["static_configs"] = [
                    {"targets": static["targets"], "labels": {"namespace": "orion-prod"}},
                    {"targets": [f"{HOST}:{self.uat_api_port}"], "labels": {"namespace": "orion-uat"}},
                ]
            else:
                static["labels"] = {"namespace": "orion-uat"}
        return config

    def post_alerts(self, alerts: list[dict]):
        request = urllib.request.Request(
            f"http://{HOST}:{self.am_port}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def stop_all(self):
        super().stop_all()
        self.webhook.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = DeliveryStack(tmp_path_factory.mktemp("monitoring-delivery"))
    try:
        s.start_api()
        s.start_uat_api()
        s.start_worker(failure_rate="1")  # orion-uat: every run fails, RUN_ON_START at once
        s.start_alertmanager()
        # Prometheus re-sends a firing alert every --rules.alert.resend-delay (1m); Watchdog fires
        # on the first evaluation, possibly before the Alertmanager address is applied.
        s.start_prometheus("--rules.alert.resend-delay=1s")
        yield s
    finally:
        s.stop_all()


def synthetic(alertname: str, namespace: str, ends_in: float) -> dict:
    """An alert with the labels the shipped rule sets (what Prometheus would send)."""
    (rule,) = [r for r in alert_rules() if r["alert"] == alertname]
    now = datetime.now(timezone.utc)
    return {
        "labels": {"alertname": alertname, **rule["labels"], "namespace": namespace, "job": "api"},
        "annotations": {"summary": f"{alertname} in {namespace} (posted by the test)"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(seconds=ends_in)).isoformat(),
    }


def test_prometheus_sees_alertmanager(stack):
    def active():
        return stack.api_get("alertmanagers")["activeAlertmanagers"]

    (am,) = wait_for("Prometheus to discover Alertmanager", active, STARTUP_TIMEOUT)
    assert am["url"] == f"http://{HOST}:{stack.am_port}/api/v2/alerts"


def test_watchdog_reaches_heartbeat_only(stack):
    (first, *_) = wait_for(
        "Watchdog at heartbeat",
        lambda: stack.webhook.notifications("heartbeat", alertname="Watchdog"),
        DELIVERY_TIMEOUT,
    )
    assert first["receiver"] == "heartbeat" and first["status"] == "firing"
    assert [n for n in stack.webhook.notifications() if n["groupLabels"].get("alertname") == "Watchdog"
            and n["receiver"] != "heartbeat"] == []


def test_uat_worker_failures_reach_team_chat_only(stack):
    (note,) = wait_for(
        "WorkerJobFailureRate for orion-uat at team-chat",
        lambda: stack.webhook.notifications("team-chat", alertname="WorkerJobFailureRate", namespace="orion-uat"),
        DELIVERY_TIMEOUT,
    )
    (alert,) = note["alerts"]
    assert alert["labels"]["severity"] == "warning" and alert["annotations"]["runbook_url"].endswith("#workerjobfailurerate")
    assert stack.webhook.notifications("oncall-page", alertname="WorkerJobFailureRate") == []


def test_stopped_prod_api_pages_once_and_inhibits_its_symptoms(stack):
    wait_for(
        "three targets up",
        lambda: len([t for t in stack.api_get("targets", state="active")["activeTargets"] if t["health"] == "up"]) == 3,
        STARTUP_TIMEOUT,
    )
    stack.api.stop()
    group = {"alertname": "APIDown", "namespace": "orion-prod", "cause": "target-down"}

    def prod_api_down_firing():
        return [
            a for a in stack.alerts("APIDown", states=("firing",))
            if a["labels"].get("namespace") == "orion-prod" and a["labels"].get("cause") == "target-down"
        ]

    wait_for("APIDown{orion-prod} firing in Prometheus", prod_api_down_firing, DELIVERY_TIMEOUT)
    # The same symptom in both namespaces: prod's is inhibited by APIDown, uat's is not.
    stack.post_alerts([synthetic("APIHighErrorRate", "orion-prod", 300), synthetic("APIHighErrorRate", "orion-uat", 300)])

    (page,) = wait_for("APIDown at oncall-page", lambda: stack.webhook.notifications("oncall-page", **group), DELIVERY_TIMEOUT)
    assert page["status"] == "firing"
    (alert,) = page["alerts"]
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["instance"] == f"{HOST}:{stack.api_port}"
    assert alert["annotations"]["summary"] == f"API target {HOST}:{stack.api_port} in orion-prod is down"
    assert alert["annotations"]["runbook_url"].endswith("docs/operating.md#apidown")
    wait_for("APIDown at team-chat too", lambda: stack.webhook.notifications("team-chat", **group), DELIVERY_TIMEOUT)

    wait_for(
        "APIHighErrorRate{orion-uat} at team-chat",
        lambda: stack.webhook.notifications("team-chat", alertname="APIHighErrorRate", namespace="orion-uat"),
        DELIVERY_TIMEOUT,
    )
    # Alertmanager has it, marked suppressed by APIDown: inhibited, not lost.
    status, body = http_get(f"http://{HOST}:{stack.am_port}/api/v2/alerts?filter=alertname%3D%22APIHighErrorRate%22")
    states = {a["labels"]["namespace"]: a["status"] for a in json.loads(body)}
    assert states["orion-prod"]["state"] == "suppressed" and states["orion-prod"]["inhibitedBy"], states
    assert states["orion-uat"]["state"] == "active", states
    # Both were posted together and route alike, so prod's would have arrived by now: nothing
    # for the inhibited alert, still one page, no page for uat.
    assert len(stack.webhook.notifications("oncall-page", **group)) == 1
    assert len(stack.webhook.notifications("team-chat", **group)) == 1
    assert stack.webhook.notifications(alertname="APIHighErrorRate", namespace="orion-prod") == []
    assert stack.webhook.notifications("oncall-page", namespace="orion-uat") == []
    assert stack.webhook.notifications("oncall-page", alertname="APIHighErrorRate") == []
    # End the posted alerts before APIDown resolves (else prod's would be un-inhibited).
    stack.post_alerts([synthetic("APIHighErrorRate", ns, 0) for ns in ("orion-prod", "orion-uat")])


def test_restarted_api_sends_resolved(stack):
    group = {"alertname": "APIDown", "namespace": "orion-prod", "cause": "target-down"}
    stack.start_api()

    def resolved():
        return [n for n in stack.webhook.notifications("oncall-page", **group) if n["status"] == "resolved"]

    (note,) = wait_for("resolved APIDown at oncall-page", resolved, DELIVERY_TIMEOUT)
    assert note["alerts"][0]["status"] == "resolved"
    wait_for(
        "resolved APIDown at team-chat",
        lambda: [n for n in stack.webhook.notifications("team-chat", **group) if n["status"] == "resolved"],
        DELIVERY_TIMEOUT,
    )
    firing = [n for n in stack.webhook.notifications("oncall-page", **group) if n["status"] == "firing"]
    assert len(firing) == 1, "one outage, one page"
    assert stack.webhook.notifications(alertname="APIHighErrorRate", namespace="orion-prod") == []


def test_one_firing_notification_per_group(stack):
    """Over the whole run, no group was notified twice while firing (repeat_interval is hours)."""
    counts: dict[tuple[str, str], int] = {}
    for note in stack.webhook.notifications():
        if note["status"] == "firing":
            key = (note["receiver"], note["groupKey"])
            counts[key] = counts.get(key, 0) + 1
    assert counts and all(n == 1 for n in counts.values()), counts
