"""Static checks of the rule files (monitoring/alerts.yaml, slo.yaml) and their promtool tests.

promtool itself (check rules, test rules) runs from mk/monitoring.mk; these tests check what
promtool cannot: the spec's alert table, annotations, runbook anchors in docs/operating.md, the
aggregation labels, and that the unit tests really cover every alert both ways.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from monitoring_support import (
    ALERT_TESTS,
    RULE_FILES,
    RUNBOOK_PREFIX,
    alert_rules,
    doc_section,
    github_slug,
    load_yaml,
    runbook_anchors,
)

# The spec's alert table (shared/spec/orion-spec.md, "Alerts"): name -> severity, and the
# `for` the spec states where it states one.
SPEC_ALERTS = {
    "APIHighErrorRate": ("critical", None),
    "APIDown": ("critical", "1m"),
    "APIHighLatency": ("warning", "5m"),
    "WorkerCrashLooping": ("critical", None),
    "WorkerJobFailureRate": ("warning", None),
    "WorkerDown": ("critical", "2m"),
}
# What issue 6 adds: staleness and connection/fd saturation; issue 12: the SLO burn-rate alert
# and the dead man's switch.
ADDED_ALERTS = {"WorkerStale", "APIConnectionSaturation", "APIErrorBudgetBurn", "Watchdog"}
# Always firing by design (vector(1), severity none): it has no near-miss and no namespace.
HEARTBEAT_ALERTS = {"Watchdog"}


def rules_by_name() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for rule in alert_rules():
        out[rule["alert"]].append(rule)
    return out


def test_every_spec_alert_and_the_additions_exist():
    names = set(rules_by_name())
    assert set(SPEC_ALERTS) <= names, f"missing spec alerts: {set(SPEC_ALERTS) - names}"
    assert ADDED_ALERTS <= names, f"missing added alerts: {ADDED_ALERTS - names}"
    assert names == set(SPEC_ALERTS) | ADDED_ALERTS, f"unexpected alerts: {names - set(SPEC_ALERTS) - ADDED_ALERTS}"


@pytest.mark.parametrize("name", sorted(SPEC_ALERTS))
def test_spec_severity_and_for(name):
    severity, hold = SPEC_ALERTS[name]
    for rule in rules_by_name()[name]:
        assert rule["labels"]["severity"] == severity, f"{name}: severity"
        if hold:
            assert rule.get("for") == hold, f"{name}: for should be {hold}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels'].get('cause', '')}")
def test_rule_labels_and_annotations(rule):
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    for key in ("summary", "description"):
        assert annotations[key].strip(), f"{rule['alert']}: empty {key}"
    assert annotations["runbook_url"].startswith(RUNBOOK_PREFIX)
    if rule["alert"] in HEARTBEAT_ALERTS:
        assert rule["labels"]["severity"] == "none" and rule["expr"].strip() == "vector(1)"
        return
    assert rule["labels"]["severity"] in {"critical", "warning"}
    # The description says how bad it is, except for absent(), whose value is always 1.
    if not rule["expr"].strip().startswith("absent("):
        assert "$value" in annotations["description"], f"{rule['alert']}: description without the value"
    assert "$labels.namespace" in annotations["summary"] + annotations["description"] or rule["expr"].strip().startswith("absent("), (
        f"{rule['alert']}: does not say which namespace"
    )


def test_runbook_anchors_exist_in_the_failure_scenarios():
    anchors = runbook_anchors()
    section = doc_section("failure-scenarios")
    section_anchors = {
        github_slug(line.lstrip("#")) for line in section.splitlines() if line.startswith("#")
    }
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"][len(RUNBOOK_PREFIX) :]
        assert anchor in anchors, f"{rule['alert']}: docs/operating.md has no heading with anchor #{anchor}"
        # ...and that heading lives in the failure-scenarios section.
        assert anchor in section_anchors, (
            f"{rule['alert']}: #{anchor} is not a heading of the failure-scenarios section"
        )


def test_docs_list_every_alert_and_metric_section_exists():
    monitoring = doc_section("monitoring")
    for name in rules_by_name():
        assert f"`{name}`" in monitoring, f"the docs' monitoring section does not list {name}"
    metrics = doc_section("metrics")
    for metric in ("http_requests_total", "worker_last_success_timestamp_seconds", "http_connections_open"):
        assert f"`{metric}`" in metrics


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels'].get('cause', '')}")
def test_aggregations_keep_namespace(rule):
    """dev, uat and prod must alert separately: no aggregation may drop `namespace`."""
    expr = rule["expr"]
    for match in re.finditer(r"\b(sum|max|min|avg|count|group|topk|bottomk)\b\s*(by|without)?\s*(\([^)]*\))?\s*\(", expr):
        op, mode, labels = match.groups()
        assert mode == "by", f"{rule['alert']}: `{op}` without `by (namespace, ...)` merges environments"
        assert "namespace" in labels, f"{rule['alert']}: `{op} by {labels}` drops namespace"
    # Counters are read only through functions that handle resets.
    for counter in re.findall(r"\b(\w+_total)\b", expr):
        for use in re.finditer(rf"{counter}\{{[^}}]*\}}(\[[^\]]+\])?", expr):
            window = use.group(1)
            before = expr[: use.start()].rstrip()
            if window:
                assert re.search(r"(rate|increase)\($", before), f"{rule['alert']}: {counter} range not via rate/increase"


def test_histogram_quantile_sums_by_le():
    for rule in alert_rules():
        for match in re.finditer(r"histogram_quantile\(\s*[\d.]+\s*,\s*(\w+)\s+by\s*\(([^)]*)\)", rule["expr"]):
            agg, labels = match.groups()
            assert agg == "sum" and "le" in [l.strip() for l in labels.split(",")], rule["alert"]


def test_multi_rule_alerts_are_told_apart_by_cause():
    for name, rules in rules_by_name().items():
        if len(rules) > 1:
            causes = [r["labels"].get("cause") for r in rules]
            assert None not in causes and len(set(causes)) == len(causes), f"{name}: causes {causes}"


def _unit_test_cases():
    """alertname -> (firing label sets, number of near-miss evaluations)."""
    firing: dict[str, list[dict]] = defaultdict(list)
    quiet: dict[str, int] = defaultdict(int)
    for path in ALERT_TESTS:
        doc = load_yaml(path)
        shipped = {p.name for p in RULE_FILES.values()}
        assert doc["rule_files"] and set(doc["rule_files"]) <= shipped, f"{path.name} must test the shipped rule files"
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    firing[case["alertname"]].extend(a["exp_labels"] for a in case["exp_alerts"])
                else:
                    quiet[case["alertname"]] += 1
    return firing, quiet


def test_unit_tests_cover_every_alert_both_ways():
    firing, quiet = _unit_test_cases()
    for name, rules in rules_by_name().items():
        assert firing.get(name), f"no promtool test where {name} fires"
        assert quiet.get(name) or name in HEARTBEAT_ALERTS, f"no promtool near-miss for {name}"
        for rule in rules:
            cause = rule["labels"].get("cause")
            if cause:
                assert any(labels.get("cause") == cause for labels in firing[name]), (
                    f"no promtool test where {name} fires with cause={cause}"
                )


def test_unit_tests_check_annotations_of_firing_alerts():
    """Every firing case pins the rendered summary/description/runbook_url (promtool 2.42
    compares annotations in any case; later versions only when the test names them)."""
    for path in ALERT_TESTS:
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                for alert in case.get("exp_alerts") or []:
                    assert "exp_annotations" in alert, f"{path.name}: {test['name']} @ {case['eval_time']}"
