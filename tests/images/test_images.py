"""The scratch images themselves, on the local docker engine: what is inside them, their
metadata, and how a container of each behaves (health, SIGTERM, bad configuration)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path

import pytest

from imagetest_util import REPO, SERVICES, image, inspect, run, wait_for

VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def image_files(ref: str) -> dict[str, tarfile.TarInfo]:
    """Every path in every layer of the image, from `docker save` (no container needed)."""
    saved = subprocess.run(["docker", "save", ref], capture_output=True, check=True, timeout=60).stdout
    outer = tarfile.open(fileobj=io.BytesIO(saved))
    manifest = json.load(outer.extractfile("manifest.json"))
    files: dict[str, tarfile.TarInfo] = {}
    for layer in manifest[0]["Layers"]:
        with tarfile.open(fileobj=outer.extractfile(layer)) as lt:
            for m in lt.getmembers():
                files[m.name] = m
    return files


@pytest.mark.parametrize("svc", SERVICES)
def test_image_size_within_budget(docker, svc):
    size = int(inspect(image(svc), "{{.Size}}"))
    limit = SERVICES[svc][2]
    assert size <= limit, f"{image(svc)} is {size} bytes uncompressed, budget {limit}"


@pytest.mark.parametrize("svc", SERVICES)
def test_image_holds_only_the_binary(docker, svc):
    """No shell, no package database, no CA bundle: one root-owned, non-writable executable."""
    files = image_files(image(svc))
    assert set(files) == {"orion"}, sorted(files)
    bin_ = files["orion"]
    assert bin_.isfile() and bin_.uid == 0 and bin_.gid == 0
    assert bin_.mode & 0o7777 == 0o755, oct(bin_.mode)


@pytest.mark.parametrize("svc", SERVICES)
def test_no_shell_to_exec(docker, svc):
    r = run("docker", "run", "--rm", "--entrypoint", "/bin/sh", image(svc), "-c", "true", check=False)
    assert r.returncode != 0
    assert "no such file" in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("svc", SERVICES)
def test_image_metadata(docker, svc):
    cfg = json.loads(inspect(image(svc), "{{json .Config}}"))
    port = SERVICES[svc][1]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/orion"]
    # Dockerfile.scratch's HEALTHCHECK, every field (Docker keeps durations in nanoseconds)
    assert cfg["Healthcheck"] == {"Test": ["CMD", "/orion", "healthcheck"], "Interval": 5_000_000_000,
                                  "Timeout": 3_000_000_000, "StartPeriod": 5_000_000_000, "Retries": 3}
    assert list(cfg["ExposedPorts"]) == [f"{port}/tcp"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == f"orion-{svc}"
    assert labels["org.opencontainers.image.source"] == "https://github.com/OrionLynn19/orionPL"
    assert labels["org.opencontainers.image.version"] == VERSION
    revision = labels["org.opencontainers.image.revision"]
    assert len(revision) == 40 and int(revision, 16) >= 0, revision
    if os.environ.get("ORION_REVISION"):
        assert revision == os.environ["ORION_REVISION"]
    host_arch = os.environ.get("ORION_HOST_ARCH")
    if host_arch:
        assert inspect(image(svc), "{{.Os}}/{{.Architecture}}") == f"linux/{host_arch}"


def proc_status(cid: str) -> dict[str, str]:
    pid = inspect(cid, "{{.State.Pid}}")
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.mark.parametrize("svc", SERVICES)
def test_container_healthy_read_only_unprivileged_and_stops_fast(container, svc):
    # The image's own HEALTHCHECK command, polled faster than its 5s default.
    cid, _ = container(svc, "--health-interval", "500ms")
    wait_for(lambda: inspect(cid, "{{.State.Health.Status}}") == "healthy", timeout=30,
             what=f"{svc} container to turn healthy")

    # docker top needs a pid column; one process, running as 65532:65532
    rows = [line.split() for line in run("docker", "top", cid, "-o", "pid,uid,gid").stdout.splitlines()[1:]]
    assert [r[1:] for r in rows] == [["65532", "65532"]], rows
    try:
        status = proc_status(cid)
    except (PermissionError, FileNotFoundError):
        status = None  # rootless engine: the process is not visible from here
    if status is not None:
        assert status["Uid"].split()[0] == "65532"
        assert int(status["CapEff"], 16) == 0, status["CapEff"]
        assert status["NoNewPrivs"].strip() == "1"

    # Idle: SIGTERM must end it cleanly, well before docker's SIGKILL at -t.
    t0 = time.monotonic()
    run("docker", "stop", "-t", "10", cid)
    elapsed = time.monotonic() - t0
    assert inspect(cid, "{{.State.ExitCode}}") == "0", run("docker", "logs", cid).stderr[-2000:]
    assert elapsed < 2.0, f"docker stop took {elapsed:.2f}s"


def test_worker_rejects_invalid_schedule(container):
    cid, _ = container("worker", env={"CRON_SCHEDULE": "nonsense"})
    wait_for(lambda: inspect(cid, "{{.State.Status}}") == "exited", timeout=15, what="worker to exit")
    assert inspect(cid, "{{.State.ExitCode}}") == "2"
    logs = run("docker", "logs", cid)
    out = logs.stdout + logs.stderr
    lines = [line for line in out.splitlines() if "CRON_SCHEDULE" in line]
    assert len(lines) == 1 and "nonsense" in lines[0], out
    assert "panicked" not in out, out
