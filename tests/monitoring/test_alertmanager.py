"""monitoring/alertmanager.yml: amtool's config check, the routing table, the inhibition contract.

Debian's amtool 0.25 reads the shipped file itself. The routing table
(monitoring/alertmanager.routes.test.yaml) is the one list of expected receivers; this test checks
that it covers every alert rule x namespace and runs `amtool config routes test` on every row.
Inhibition needs a running Alertmanager: test_delivery.py proves it live; here only the rules'
shape is checked against the contract.
"""

from __future__ import annotations

import re

import pytest

from monitoring_support import ALERTMANAGER_YML, ROUTES_TEST, alert_rules, load_yaml, run, tool

RECEIVERS = {"oncall-page", "team-chat", "heartbeat"}
SECRETS_DIR = "/etc/alertmanager/secrets/"


def amtool() -> str:
    return tool("amtool")


def rule_labels(rule: dict) -> dict:
    labels = {"alertname": rule["alert"], "severity": rule["labels"]["severity"]}
    if "cause" in rule["labels"]:
        labels["cause"] = rule["labels"]["cause"]
    return labels


def routing_rows() -> list[tuple[dict, str, list[str]]]:
    """(labels, namespace or 'no-namespace', expected receivers) for every row of the table."""
    table = load_yaml(ROUTES_TEST)
    rows = []
    for route in table["routes"]:
        for namespace, receivers in route["receivers"].items():
            rows.append((route["labels"], namespace, receivers))
    return rows


def test_amtool_check_config():
    result = run([amtool(), "check-config", str(ALERTMANAGER_YML)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_receivers_read_their_secrets_from_files():
    config = load_yaml(ALERTMANAGER_YML)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == RECEIVERS
    (pagerduty,) = receivers["oncall-page"]["pagerduty_configs"]
    assert pagerduty["routing_key_file"].startswith(SECRETS_DIR) and "routing_key" not in pagerduty
    (slack,) = receivers["team-chat"]["slack_configs"]
    assert slack["api_url_file"].startswith(SECRETS_DIR) and "api_url" not in slack
    assert "slack_api_url" not in config.get("global", {}) and "pagerduty_url" not in config.get("global", {})
    (hook,) = receivers["heartbeat"]["webhook_configs"]
    assert hook["http_config"]["authorization"]["credentials_file"].startswith(SECRETS_DIR)
    # Resolved notifications on where a person reads them.
    assert pagerduty["send_resolved"] is True and slack["send_resolved"] is True


def test_grouping_keeps_namespaces_and_causes_apart():
    route = load_yaml(ALERTMANAGER_YML)["route"]
    assert route["group_by"] == ["alertname", "namespace", "cause"]
    assert route["receiver"] == "team-chat"


def test_routing_table_covers_every_rule_and_namespace():
    table = load_yaml(ROUTES_TEST)
    namespaces = set(table["namespaces"])
    assert namespaces == {"orion-prod", "orion-uat", "orion-dev", "local"}
    routes = {tuple(sorted(r["labels"].items())): r["receivers"] for r in table["routes"]}
    assert len(routes) == len(table["routes"]), "duplicate rows in the routing table"
    wanted = {tuple(sorted(rule_labels(r).items())): r for r in alert_rules()}
    assert set(routes) == set(wanted), (
        f"missing: {set(wanted) - set(routes)}; not an alert rule: {set(routes) - set(wanted)}"
    )
    for key, receivers in routes.items():
        assert namespaces <= set(receivers), f"{dict(key)}: no row for {namespaces - set(receivers)}"
        expr = wanted[key]["expr"].strip()
        if expr.startswith(("absent(", "vector(")):
            assert "no-namespace" in receivers, f"{dict(key)} can fire without a namespace"
        for names in receivers.values():
            assert set(names) <= RECEIVERS


def test_routing_table_states_the_paging_contract():
    """Independent of amtool: the table itself says only critical + orion-prod pages."""
    for labels, namespace, receivers in routing_rows():
        pages = "oncall-page" in receivers
        assert pages == (labels["severity"] == "critical" and namespace == "orion-prod"), (labels, namespace)
        if labels["alertname"] == "Watchdog":
            assert receivers == ["heartbeat"]
        else:
            assert "team-chat" in receivers and "heartbeat" not in receivers


@pytest.mark.parametrize(
    "labels,namespace,receivers",
    routing_rows(),
    ids=[f"{'-'.join(l.values())}@{ns}" for l, ns, _ in routing_rows()],
)
def test_amtool_routes(labels, namespace, receivers):
    args = [f"{k}={v}" for k, v in labels.items()]
    if namespace != "no-namespace":
        args.append(f"namespace={namespace}")
    result = run(
        [
            amtool(),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_YML}",
            f"--verify.receivers={','.join(receivers)}",
            *args,
        ]
    )
    assert result.returncode == 0, f"{args}: {result.stdout.strip()} (expected {receivers}) {result.stderr}"
    assert result.stdout.strip().split(",") == receivers


def _inhibitions() -> list[tuple[str, set[str], list[str]]]:
    out = []
    for rule in load_yaml(ALERTMANAGER_YML)["inhibit_rules"]:
        source = [m for m in rule["source_matchers"] if m.startswith("alertname=")]
        target = [m for m in rule["target_matchers"] if m.startswith("alertname")]
        (source,), (target,) = source, target
        names = re.fullmatch(r'alertname=~?"([^"]+)"', target).group(1).split("|")
        out.append((re.fullmatch(r'alertname="([^"]+)"', source).group(1), set(names), rule["equal"]))
    return out


def test_inhibition_contract():
    inhibitions = {source: (targets, equal) for source, targets, equal in _inhibitions() if source != "APIErrorBudgetBurn"}
    assert inhibitions == {
        "APIDown": ({"APIHighErrorRate", "APIHighLatency", "APIConnectionSaturation", "APIErrorBudgetBurn"}, ["namespace"]),
        "WorkerDown": ({"WorkerJobFailureRate", "WorkerStale", "WorkerCrashLooping"}, ["namespace"]),
    }
    # Never across namespaces: every rule requires the same namespace.
    alert_names = {r["alert"] for r in alert_rules()}
    for source, targets, equal in _inhibitions():
        assert "namespace" in equal, source
        assert {source} | targets <= alert_names, f"inhibition names an alert that does not exist: {targets}"
