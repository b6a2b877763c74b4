"""docker-compose.yml: what it declares (read back through `compose config`, so
interpolation and merge keys are resolved the way the engine will see them), its
agreement with the monitoring files it mounts, the api+worker part running for real, and
api + worker + Prometheus + Alertmanager running together.

The upstream prom/prometheus and prom/alertmanager images cannot be pulled on a machine
without registry access, so that run swaps them (through an override file, nothing else
changed) for stand-ins built from Debian's binaries with the upstream layout
(tests/images/standins.py, tagged orion-standin/...). It proves the compose wiring: the
mounts, the service names Prometheus scrapes and alerts to, the read-only root, the user
and data volumes; not the upstream images themselves, nor Prometheus 3.13 / Alertmanager
0.35 (the stand-ins are Debian's 2.42 / 0.25). Grafana has no stand-in (not in Debian)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import json

import pytest
import yaml

import standins
from imagetest_util import REPO, RUN_ID, TAG, free_port, http_get, inspect, missing, run, wait_for

APP = {"api": 8000, "worker": 9091}
# The spec's DEV row, except LOG_LEVEL: a knob whose default is info (probes and scrapes log at
# debug, so the default `docker compose logs` is not a line per health check).
DEV_ENV = {
    "api": {"NODE_ENV": "development", "LOG_LEVEL": "info", "PORT": "8000"},
    "worker": {"NODE_ENV": "development", "LOG_LEVEL": "info", "METRICS_PORT": "9091",
               "CRON_SCHEDULE": "* * * * *", "TZ": "UTC"},
}


@pytest.fixture(scope="module")
def compose_bin() -> list[str]:
    """The compose CLI; `config` needs no engine."""
    cmd = os.environ.get("ORION_COMPOSE", "").split()
    if not cmd:
        plugin = shutil.which("docker") and run("docker", "compose", "version", check=False).returncode == 0
        cmd = ["docker", "compose"] if plugin else ["docker-compose"]
    if shutil.which(cmd[0]) is None:
        missing("neither `docker compose` nor `docker-compose` is installed")
    return cmd


def compose(cmd: list[str], *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 180,
            overrides: tuple[Path, ...] = ()):
    full_env = {**os.environ, "TAG": TAG, **(env or {})}
    files = ["-f", str(REPO / "docker-compose.yml")]
    for extra in overrides:
        files += ["-f", str(extra)]
    return subprocess.run([*cmd, *files, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def config(compose_bin) -> dict:
    # LOG_LEVEL empty: the default, whatever the caller's environment says
    env = {"API_PORT": "18000", "GRAFANA_ADMIN_PASSWORD": "s3cret-from-env", "LOG_LEVEL": ""}
    r = compose(compose_bin, "config", env=env, check=False)
    assert r.returncode == 0, f"compose rejected docker-compose.yml:\n{r.stderr}"
    return yaml.safe_load(r.stdout)


def test_compose_config_is_valid(compose_bin):
    r = compose(compose_bin, "config", "-q", check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("svc", APP)
def test_app_services_hardened(config, svc):
    s = config["services"][svc]
    assert s["image"] == f"orion-{svc}:{TAG}"
    assert s["read_only"] is True
    assert s["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in s["security_opt"]
    assert s["restart"] == "unless-stopped"
    assert s["healthcheck"]["test"] == ["CMD", "/orion", "healthcheck"]
    assert s["environment"] == DEV_ENV[svc]
    assert not s.get("depends_on")
    # published on loopback by default, the port overridable from the environment
    published = [(p["host_ip"], int(p["published"]), p["target"]) if isinstance(p, dict) else p for p in s["ports"]]
    want_host = 18000 if svc == "api" else 9091
    assert published in ([("127.0.0.1", want_host, APP[svc])], [f"127.0.0.1:{want_host}:{APP[svc]}/tcp"]), published


@pytest.mark.parametrize("level", ["debug", "warn"])
def test_log_level_is_a_knob(compose_bin, level):
    r = compose(compose_bin, "config", env={"LOG_LEVEL": level})
    services = yaml.safe_load(r.stdout)["services"]
    assert services["api"]["environment"]["LOG_LEVEL"] == level
    assert services["worker"]["environment"]["LOG_LEVEL"] == level


def test_monitoring_services_pinned_and_locked_down(config):
    prom, am, graf = (config["services"][n] for n in ("prometheus", "alertmanager", "grafana"))
    for s in (prom, am, graf):
        name, _, tag = s["image"].partition(":")
        assert tag and tag != "latest" and (tag[0].isdigit() or tag.startswith("v")), s["image"]
        assert "no-new-privileges:true" in s["security_opt"]
    for s in (prom, am):
        assert s["read_only"] is True and s["cap_drop"] == ["ALL"]
    assert not prom.get("depends_on"), "prometheus must not wait for the services it scrapes"
    env = graf["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-from-env"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"  # else Grafana (12 and later) downloads apps at start


def test_alertmanager_mounts_the_shared_config_and_the_secrets_dir(config):
    am = config["services"]["alertmanager"]
    binds = _binds(am)
    assert Path(binds["/etc/alertmanager/alertmanager.yml"]) == REPO / "monitoring" / "alertmanager.yml"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    # every *_file the config names is inside the mounted secrets directory
    cfg = (REPO / "monitoring" / "alertmanager.yml").read_text()
    for path in re.findall(r"_file: (\S+)", cfg):
        assert str(Path(path).parent) in binds, f"{path} is not inside a mount"
        assert Path(binds[str(Path(path).parent)]) == REPO / "monitoring" / "alertmanager-secrets"


def _binds(service: dict) -> dict[str, str]:
    """container path -> host path for the service's bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            if v.get("type") == "bind":
                out[v["target"]] = v["source"]
        else:
            src, dst, *_ = v.split(":")
            if src.startswith("/") or src.startswith("."):
                out[dst] = src
    return out


def test_bind_mount_sources_exist(config):
    """A missing source would make docker create an empty root-owned directory instead."""
    for name, s in config["services"].items():
        for dst, src in _binds(s).items():
            p = Path(src) if Path(src).is_absolute() else REPO / src
            assert p.exists(), f"{name}: {p} (mounted at {dst}) does not exist"
            assert p.is_dir() == (not Path(dst).suffix), f"{name}: {p} -> {dst}: file/directory mismatch"


def test_prometheus_config_matches_compose(config):
    prom = config["services"]["prometheus"]
    binds = _binds(prom)
    cfg = yaml.safe_load(Path(binds["/etc/prometheus/prometheus.yml"]).read_text())
    (am,) = cfg["alerting"]["alertmanagers"]
    for target in am["static_configs"][0]["targets"]:
        host, port = target.split(":")
        assert host in config["services"], f"Prometheus alerts to {host!r}, not a compose service"
        assert port == "9093"
    for rule_file in cfg.get("rule_files", []):
        assert rule_file in binds, f"rule file {rule_file} is not mounted into prometheus"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    for svc, port in APP.items():
        assert svc in jobs, f"no scrape job {svc!r}"
        targets = [t for sc in jobs[svc].get("static_configs", []) for t in sc["targets"]]
        assert targets == [f"{svc}:{port}"], targets


def test_grafana_dashboards_mounted_where_provider_reads(config):
    graf = config["services"]["grafana"]
    binds = _binds(graf)
    # Only the datasources and dashboards provisioning directories, nothing else of Grafana's.
    prov = {dst: src for dst, src in binds.items() if dst.startswith("/etc/grafana")}
    assert set(prov) == {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"}
    providers = yaml.safe_load((Path(prov["/etc/grafana/provisioning/dashboards"]) / "dashboards.yaml").read_text())["providers"]
    paths = {p["options"]["path"] for p in providers}
    for path in paths:
        assert path in binds, f"dashboard provider reads {path}, compose mounts {sorted(binds)}"
        assert any(Path(binds[path]).glob("*.json")), f"no dashboard JSON in {binds[path]}"
    assert any(Path(prov["/etc/grafana/provisioning/datasources"]).glob("*.yaml"))


@pytest.fixture(scope="module")
def app_stack(docker, compose_cmd):
    """api + worker from docker-compose.yml under a private project name and free ports."""
    ports = {"API_PORT": str(free_port()), "WORKER_PORT": str(free_port())}
    env = {**ports, "COMPOSE_PROJECT_NAME": RUN_ID, "BIND_ADDR": "127.0.0.1", "LOG_LEVEL": ""}
    try:
        r = compose(compose_cmd, "up", "-d", "--no-build", "api", "worker", env=env, check=False)
        assert r.returncode == 0, r.stderr
        yield {svc: int(ports[f"{svc.upper()}_PORT"]) for svc in APP}, env
    finally:
        compose(compose_cmd, "down", "-v", "--remove-orphans", "--timeout", "15", env=env, check=False)
        left = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={RUN_ID}", check=False)
        if left.stdout.split():
            run("docker", "rm", "-f", *left.stdout.split(), check=False)


def test_app_stack_comes_up_healthy_and_serves(app_stack, compose_cmd):
    ports, env = app_stack
    for svc in APP:
        cid = compose(compose_cmd, "ps", "-q", svc, env=env).stdout.strip()
        assert cid, f"no container for {svc}"
        wait_for(lambda: inspect(cid, "{{.State.Health.Status}}") == "healthy", timeout=60,
                 interval=0.5, what=f"compose {svc} to turn healthy")
        assert inspect(cid, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        status, _ = http_get(f"http://127.0.0.1:{ports[svc]}/health")
        assert status == 200
        status, body = http_get(f"http://127.0.0.1:{ports[svc]}/metrics")
        assert status == 200
        assert f'orion_build_info{{' in body and f'service="{svc}"' in body, body[:500]


def test_app_stack_logs_no_probes_or_scrapes_at_the_default_level(app_stack, compose_cmd):
    """`docker compose logs` at the default LOG_LEVEL: the services' start lines, but not a line
    per health check (every 5 s) or per scrape; those are debug lines."""
    ports, env = app_stack
    for svc in APP:
        cid = compose(compose_cmd, "ps", "-q", svc, env=env).stdout.strip()
        for path in ("/health", "/ready", "/metrics"):
            assert http_get(f"http://127.0.0.1:{ports[svc]}{path}")[0] == 200
        # at least two of Docker's own health checks since the container started
        wait_for(lambda: len(json.loads(inspect(cid, "{{json .State.Health.Log}}"))) >= 2, timeout=30,
                 interval=0.5, what=f"two health checks of {svc}")
        logs = run("docker", "logs", cid)
        lines = (logs.stdout + logs.stderr).splitlines()
        assert any('"level":"info"' in line for line in lines), lines[:5]  # it does log
        probes = [line for line in lines if '"route":"/health"' in line or '"route":"/metrics"' in line
                  or '"route":"/ready"' in line]
        assert not probes, probes[:3]


# ---------------------------------------------------------------- api + worker + Prometheus + Alertmanager
MONITORED = ("api", "worker", "prometheus", "alertmanager")


@pytest.fixture(scope="module")
def monitored_stack(docker, compose_cmd, tmp_path_factory):
    """The compose stack without Grafana, Prometheus and Alertmanager from the stand-ins."""
    images = {name: standins.build(name) for name in ("prometheus", "alertmanager")}
    shipped = yaml.safe_load(compose(compose_cmd, "config").stdout)["services"]
    override = tmp_path_factory.mktemp("compose") / "standins.yml"
    services = {name: {"image": ref} for name, ref in images.items()}
    # Prometheus re-sends a firing alert only every minute (--rules.alert.resend-delay); its first
    # evaluation may come before the Alertmanager target is applied. The test's own copy of the
    # command re-sends every second; everything else of the command is the shipped one.
    services["prometheus"]["command"] = [*shipped["prometheus"]["command"], "--rules.alert.resend-delay=1s"]
    override.write_text(yaml.safe_dump({"services": services}))
    ports = {f"{svc.upper()}_PORT": str(free_port()) for svc in MONITORED}
    env = {**ports, "COMPOSE_PROJECT_NAME": f"{RUN_ID}-mon", "BIND_ADDR": "127.0.0.1"}
    try:
        r = compose(compose_cmd, "up", "-d", "--no-build", *MONITORED, env=env, check=False, overrides=(override,))
        assert r.returncode == 0, r.stderr
        yield {svc: int(ports[f"{svc.upper()}_PORT"]) for svc in MONITORED}, env, override, images
    finally:
        compose(compose_cmd, "down", "-v", "--remove-orphans", "--timeout", "15", env=env, check=False, overrides=(override,))
        left = run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}", check=False)
        if left.stdout.split():
            run("docker", "rm", "-f", *left.stdout.split(), check=False)


def _json(url: str):
    """The JSON document at url, or None while the service is not answering yet."""
    try:
        status, body = http_get(url)
    except OSError:  # connection refused/reset while the container starts
        return None
    return json.loads(body) if status == 200 else None


def test_compose_prometheus_scrapes_and_alerts_to_compose_alertmanager(monitored_stack, compose_cmd):
    ports, env, override, images = monitored_stack
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    am = f"http://127.0.0.1:{ports['alertmanager']}"
    for svc in ("prometheus", "alertmanager"):
        cid = compose(compose_cmd, "ps", "-q", svc, env=env, overrides=(override,)).stdout.strip()
        assert inspect(cid, "{{.Config.Image}}") == images[svc]
        assert inspect(cid, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        assert inspect(cid, "{{.Config.User}}") == "65534:65534"

    def targets_up():
        doc = _json(f"{prom}/api/v1/targets?state=active")
        targets = doc["data"]["activeTargets"] if doc else []
        up = {t["labels"]["job"]: t["scrapeUrl"] for t in targets if t["health"] == "up"}
        return up if set(up) == {"api", "worker"} else None

    up = wait_for(targets_up, timeout=60, interval=0.5, what="Prometheus in compose to scrape api and worker")
    assert up == {"api": "http://api:8000/metrics", "worker": "http://worker:9091/metrics"}

    def rules_loaded():
        doc = _json(f"{prom}/api/v1/rules")
        return doc and [g["name"] for g in doc["data"]["groups"]]

    shipped_groups = [g["name"] for f in ("alerts.yaml", "slo.yaml")
                      for g in yaml.safe_load((REPO / "monitoring" / f).read_text())["groups"]]
    assert sorted(wait_for(rules_loaded, timeout=30, what="rules loaded")) == sorted(shipped_groups)

    def sees_alertmanager():
        doc = _json(f"{prom}/api/v1/alertmanagers")
        return doc and doc["data"]["activeAlertmanagers"]

    (active,) = wait_for(sees_alertmanager, timeout=30, what="Prometheus to discover compose's Alertmanager")
    assert active["url"] == "http://alertmanager:9093/api/v2/alerts"

    # Delivered: Alertmanager in compose holds the Watchdog that Prometheus in compose evaluated,
    # routed to the heartbeat receiver by the mounted monitoring/alertmanager.yml.
    def watchdog():
        alerts = _json(f"{am}/api/v2/alerts") or []
        return [a for a in alerts if a["labels"].get("alertname") == "Watchdog"]

    (alert,) = wait_for(watchdog, timeout=60, interval=0.5, what="Watchdog in compose's Alertmanager")
    assert [r["name"] for r in alert["receivers"]] == ["heartbeat"]
    status = _json(f"{am}/api/v2/status")
    assert "oncall-page" in status["config"]["original"] and "heartbeat" in status["config"]["original"]


class _FakeGrafana:
    """Grafana's three API answers verify_stack.py reads (no Grafana stand-in exists: it is
    not in Debian). `dashboard=False` answers 404 for the dashboard, as an empty Grafana would."""

    def __init__(self, dashboard: bool = True):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        answers = {
            "/api/health": {"database": "ok", "version": "fake"},
            "/api/datasources/uid/prometheus": {"uid": "prometheus", "type": "prometheus", "url": "http://prometheus:9090"},
        }
        if dashboard:
            answers["/api/dashboards/uid/orion"] = {"dashboard": {"uid": "orion", "title": "Orion"}}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = answers.get(self.path)
                authorised = self.path == "/api/health" or self.headers.get("Authorization", "").startswith("Basic ")
                self.send_response(200 if body is not None and authorised else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body or {"message": "not found"}).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _verify(ports: dict[str, int], grafana: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["python3", str(REPO / "monitoring" / "verify_stack.py"), "--timeout", str(timeout),
         "--prometheus", f"http://127.0.0.1:{ports['prometheus']}",
         "--alertmanager", f"http://127.0.0.1:{ports['alertmanager']}", "--grafana", grafana],
        capture_output=True, text=True, timeout=timeout + 30)


def _make_up_verify_command() -> str:
    """The verify_stack.py command line of `make up` (mk/images.mk), as the shell will run it."""
    text = (REPO / "mk" / "images.mk").read_text()
    start = text.index("python3 monitoring/verify_stack.py")
    command = text[start:text.index("||", start)]
    return re.sub(r"\\\n\s*", " ", command).replace("$$", "$").replace("$(UP_TIMEOUT)", "60").strip()


def test_make_up_verification_of_the_compose_stack(monitored_stack):
    """What `make up` runs after start, exactly its command line from mk/images.mk: one line per
    check, exit 0 on the compose stack."""
    ports, *_ = monitored_stack
    grafana = _FakeGrafana()
    grafana_port = grafana.url.rsplit(":", 1)[1]
    env = {**os.environ, "host": "127.0.0.1", "PROMETHEUS_PORT": str(ports["prometheus"]),
           "ALERTMANAGER_PORT": str(ports["alertmanager"]), "GRAFANA_PORT": grafana_port}
    try:
        r = subprocess.run(["bash", "-c", _make_up_verify_command()], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        grafana.close()
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(lines) == 7 and all(line.startswith("  ok  ") for line in lines), r.stdout
    assert "targets api and worker up: api up, worker up" in r.stdout
    assert "http://alertmanager:9093/api/v2/alerts" in r.stdout


def test_make_up_verification_fails_on_a_missing_dashboard(monitored_stack):
    ports, *_ = monitored_stack
    grafana = _FakeGrafana(dashboard=False)
    try:
        r = _verify(ports, grafana.url, 3)
    finally:
        grafana.close()
    assert r.returncode == 1, r.stdout + r.stderr
    (failed,) = [line for line in r.stdout.splitlines() if line.startswith("  FAIL")]
    assert "Orion dashboard provisioned" in failed
