"""Fixtures for the image tests.

The tests drive the real docker engine of this machine with the images `make images`
built (orion-api:$ORION_TAG, orion-worker:$ORION_TAG). Without an engine they are
SKIPPED with a loud reason, except under CI=true, where a missing engine (or qemu) is
a failure: CI must never go green by testing nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest

from imagetest_util import RUN_LABEL, SERVICES, TAG, free_port, image, missing, run


@pytest.fixture(scope="session")
def docker() -> str:
    exe = shutil.which("docker")
    if exe is None:
        missing("no `docker` command: image and compose tests need a docker engine")
    r = run("docker", "info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    if r.returncode != 0 or not r.stdout.strip():
        missing(f"no docker engine reachable ({r.stderr.strip()[:200]})")
    for svc in SERVICES:
        if run("docker", "image", "inspect", image(svc), check=False).returncode != 0:
            pytest.fail(f"image {image(svc)} not found: run `make images TAG={TAG}` first", pytrace=False)
    return exe


@pytest.fixture(scope="session")
def compose_cmd(docker) -> list[str]:
    cmd = os.environ.get("ORION_COMPOSE", "").split()
    if not cmd:
        cmd = ["docker", "compose"] if run("docker", "compose", "version", check=False).returncode == 0 else ["docker-compose"]
    if shutil.which(cmd[0]) is None:
        missing("neither `docker compose` nor `docker-compose` is installed")
    return cmd


@pytest.fixture(scope="session", autouse=True)
def _sweep():
    """Remove every container this session labelled, even after a failed assertion."""
    yield
    if shutil.which("docker") is None:
        return
    ids = run("docker", "ps", "-aq", "--filter", f"label={RUN_LABEL}", check=False).stdout.split()
    if ids:
        run("docker", "rm", "-f", "-v", *ids, check=False)


@pytest.fixture
def container(docker):
    """Factory: start a detached container from an Orion image; removed at teardown."""
    started: list[str] = []

    def start(service: str, *flags: str, env: dict[str, str] | None = None, publish: bool = False):
        port_var, port, _ = SERVICES[service]
        args = ["docker", "run", "-d", "--label", RUN_LABEL, "--read-only", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges:true"]
        host_port = None
        if publish:
            host_port = free_port()
            args += ["-p", f"127.0.0.1:{host_port}:{port}"]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        args += [*flags, image(service)]
        cid = run(*args).stdout.strip()
        started.append(cid)
        return cid, host_port

    yield start
    if started:
        run("docker", "rm", "-f", "-v", *started, check=False)
