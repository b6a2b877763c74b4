"""docker-compose.yml: what it declares (read back through `compose config`, so
interpolation and merge keys are resolved the way the engine will see them), its
agreement with the monitoring files it mounts, and the api+worker part running for real.
Prometheus and Grafana are left out of the run: their upstream images cannot be pulled
on a machine without registry access."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from imagetest_util import REPO, RUN_ID, TAG, free_port, http_get, inspect, missing, run, wait_for

APP = {"api": 8000, "worker": 9091}
DEV_ENV = {
    "api": {"NODE_ENV": "development", "LOG_LEVEL": "debug", "PORT": "8000"},
    "worker": {"NODE_ENV": "development", "LOG_LEVEL": "debug", "METRICS_PORT": "9091",
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


def compose(cmd: list[str], *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 180):
    full_env = {**os.environ, "TAG": TAG, **(env or {})}
    return subprocess.run([*cmd, "-f", str(REPO / "docker-compose.yml"), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def config(compose_bin) -> dict:
    env = {"API_PORT": "18000", "GRAFANA_ADMIN_PASSWORD": "s3cret-from-env"}
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


def test_monitoring_services_pinned_and_locked_down(config):
    prom, graf = config["services"]["prometheus"], config["services"]["grafana"]
    for s in (prom, graf):
        name, _, tag = s["image"].partition(":")
        assert tag and tag != "latest" and (tag[0].isdigit() or tag.startswith("v")), s["image"]
    assert not prom.get("depends_on"), "prometheus must not wait for the services it scrapes"
    env = graf["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-from-env"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


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
    prov = Path(binds["/etc/grafana/provisioning"])
    providers = yaml.safe_load((prov / "dashboards" / "dashboards.yaml").read_text())["providers"]
    paths = {p["options"]["path"] for p in providers}
    for path in paths:
        assert path in binds, f"dashboard provider reads {path}, compose mounts {sorted(binds)}"
        assert any(Path(binds[path]).glob("*.json")), f"no dashboard JSON in {binds[path]}"
    assert (prov / "datasources").is_dir()


@pytest.fixture(scope="module")
def app_stack(docker, compose_cmd):
    """api + worker from docker-compose.yml under a private project name and free ports."""
    ports = {"API_PORT": str(free_port()), "WORKER_PORT": str(free_port())}
    env = {**ports, "COMPOSE_PROJECT_NAME": RUN_ID, "BIND_ADDR": "127.0.0.1"}
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
