"""The compose Prometheus config: what docker-compose.yml and the alert rules rely on."""

from monitoring_support import PROMETHEUS_YML, RULE_FILES, load_yaml


def test_compose_scrape_config():
    config = load_yaml(PROMETHEUS_YML)
    assert config["global"]["scrape_interval"] == "15s"
    # docker-compose.yml mounts monitoring/alerts.yaml and slo.yaml exactly here.
    assert config["rule_files"] == list(RULE_FILES)
    jobs = {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}
    assert set(jobs) == {"api", "worker"}, "the rules select job=\"api\" / job=\"worker\""
    expected = {"api": "api:8000", "worker": "worker:9091"}
    for job, target in expected.items():
        (static,) = jobs[job]["static_configs"]
        assert static["targets"] == [target]
        # Every alert aggregates by namespace; compose's one environment is "local".
        assert static["labels"] == {"namespace": "local"}
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"


def test_compose_prometheus_sends_to_compose_alertmanager():
    (alertmanager,) = load_yaml(PROMETHEUS_YML)["alerting"]["alertmanagers"]
    (static,) = alertmanager["static_configs"]
    assert static["targets"] == ["alertmanager:9093"]  # the service name in docker-compose.yml
