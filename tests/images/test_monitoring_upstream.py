"""scripts/monitoring-upstream-check.sh: promtool and amtool from the images compose ships.

CI's GitHub runner runs the script against the upstream images (prom/prometheus and
prom/alertmanager at docker-compose.yml's tags). Here no image can be pulled, so it runs
against the stand-in images (tests/images/standins.py: Debian's prometheus 2.42 / alertmanager
0.25 with promtool and amtool at upstream's /bin paths): the script's own `docker run`s, with
their mounts, users and read-only root, run for real; only the tool versions differ.

What this does not prove: that Prometheus 3.13 and Alertmanager 0.35 accept the files (only the
runner, with the upstream images, shows that; its log says which versions ran).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import standins
from imagetest_util import REPO, missing, run

SCRIPT = REPO / "scripts" / "monitoring-upstream-check.sh"


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    if shutil.which("docker") is None or run("docker", "info", check=False, timeout=30).returncode != 0:
        missing("no docker engine: the stand-in images need one")
    return {"MONITORING_PROMETHEUS_IMAGE": standins.build("prometheus"),
            "MONITORING_ALERTMANAGER_IMAGE": standins.build("alertmanager")}


def check(root: Path, images: dict, *tests: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "scripts" / SCRIPT.name), *tests], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **images, **env})


def test_every_check_runs_in_the_image_with_the_files_where_the_image_reads_them(images):
    """All four checks reach the tool with their files. The last, k8s's prometheus.yml, fails in
    the stand-in for a reason of Debian's build, not of the file: Debian's prometheus 2.42 has no
    Kubernetes service discovery ("field kubernetes_sd_configs not found"), upstream's has."""
    prom, am = images["MONITORING_PROMETHEUS_IMAGE"], images["MONITORING_ALERTMANAGER_IMAGE"]
    r = check(REPO, images, "alerts.test.yaml")
    out = r.stdout + r.stderr
    assert f"promtool 2.42.0+ds of {prom}: check config of compose's prometheus.yml and rules passed" in r.stdout, out
    assert f"promtool 2.42.0+ds of {prom}: test rules (alerts.test.yaml) passed" in r.stdout, out
    assert f"amtool of {am}: check-config monitoring/alertmanager.yml passed" in r.stdout, out
    assert "Checking /etc/prometheus/config/prometheus.yml" in out, "k8s's config reached promtool where k8s mounts it"
    assert "field kubernetes_sd_configs not found" in out and r.returncode == 1, out


def copy_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "monitoring", root / "monitoring")
    shutil.copytree(REPO / "scripts", root / "scripts")
    (root / "k8s" / "monitoring" / "prometheus").mkdir(parents=True)
    shutil.copy(REPO / "k8s" / "monitoring" / "prometheus" / "prometheus.yml", root / "k8s" / "monitoring" / "prometheus")
    shutil.copy(REPO / "docker-compose.yml", root)
    for p in [root, *root.rglob("*")]:  # the container's user is ours, with umask-free modes
        p.chmod(0o755 if p.is_dir() else p.stat().st_mode | 0o644)
    return root


def test_a_broken_rule_fails_the_check(images, tmp_path):
    root = copy_repo(tmp_path)
    rules = root / "monitoring" / "alerts.yaml"
    rules.write_text(rules.read_text().replace("expr:", "expr: sum by (", 1))
    r = check(root, images, "alerts.test.yaml")
    assert r.returncode != 0
    assert "passed" not in r.stdout


def test_on_githubs_runner_an_image_it_cannot_pull_is_a_failure(images, tmp_path):
    absent = {**images, "MONITORING_ALERTMANAGER_IMAGE": "orion-absent/alertmanager:v0"}
    r = check(REPO, absent, GITHUB_ACTIONS="true")
    assert r.returncode == 1 and "FAILED: cannot pull orion-absent/alertmanager:v0" in r.stderr
    r = check(REPO, absent, GITHUB_ACTIONS="")
    assert r.returncode == 0 and "NOT RUN: orion-absent/alertmanager:v0 cannot be pulled here" in r.stdout
